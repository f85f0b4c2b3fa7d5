"""Distil a fine-tuned BERT-style classifier (the teacher) into a smaller student, and compare the two.

    accelerate launch recipes/distill_bert.py --teacher_model_name_or_path outputs/finetune_bert \
        --train_file train.csv --validation_file dev.csv --student_num_layers 3

Flow: arguments → data, checked against the teacher's label space → teacher, tokenizer → student (the
teacher's embeddings, head and every other block, or --model_name_or_path) → DistillationTrainer → train
(resuming) → evaluate student and teacher → CPU latency at batch 1 and 16 → comparison table and results.
"""

import hfopt  # noqa: F401  (first: it drops known-harmless third-party import-time lines, hfopt.quiet)

# isort: split
import logging
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModelForSequenceClassification

from hfopt.args import (
    RECIPE_DEFAULTS,
    CompressionArguments,
    DataArguments,
    ModelArguments,
    RunArguments,
    StrategyArguments,
    parse_args,
    reject_unsupported,
)
from hfopt.data import (
    LabelSpace,
    check_texts,
    detect_classification_columns,
    load_raw_datasets,
    padding_collator,
    tokenize_for_classification,
)
from hfopt.distillation import DistillationTrainer, DistillationTrainingArguments, student_from_teacher
from hfopt.errors import InputError
from hfopt.latency import latency_rows, speedups, trained_model_latency
from hfopt.metrics import task_metrics
from hfopt.models import load_tokenizer, load_trained_model
from hfopt.run import (
    check_metric_for_best_model,
    finish_run,
    recipe_main,
    report_complete_run,
    write_json_atomic,
)
from hfopt.workflow import begin_run, build_trainer, prepare_model, search, train

RECIPE = "distill_bert"
logger = logging.getLogger(f"hfopt.recipes.{RECIPE}")


@dataclass
class StudentArguments:
    """Where the teacher comes from and how the student is made.

    Args:
        teacher_model_name_or_path: the fine-tuned classifier to distil.
        student_num_layers: blocks of a student made from the teacher (every other block by default).
        student_layers: the teacher blocks (0-based) the student keeps.
    """

    teacher_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The fine-tuned classification model to distil (path or hub id)."}
    )
    student_num_layers: int = field(default=3, metadata={"help": "Blocks of the student made from the teacher."})
    student_layers: list[int] | None = field(
        default=None, metadata={"help": "0-based teacher blocks copied into the student. Unset: every other."}
    )

    def __post_init__(self):
        if self.student_num_layers < 1:
            raise InputError(f"student_num_layers must be ≥ 1, got {self.student_num_layers}")
        if self.student_layers is not None and len(self.student_layers) != self.student_num_layers:
            self.student_num_layers = len(self.student_layers)


ARGUMENTS = (
    ModelArguments,
    DataArguments,
    StudentArguments,
    StrategyArguments,
    CompressionArguments,
    RunArguments,
    DistillationTrainingArguments,
)
# Shared flags this recipe cannot honour: giving one is an error.
UNSUPPORTED = {
    "model_type": "the student is made from the teacher's blocks, or loaded with --model_name_or_path",
    "config_name": "the student takes the teacher's config",
    "config_overrides": "the student takes the teacher's config",
    "tokenizer_vocab_size": "the student uses the teacher's tokenizer",
    "num_labels": "the student predicts the teacher's classes",
    "ignore_mismatched_sizes": "the student's head must match the teacher's",
    "test_file": "distillation evaluates on the validation data; predict with finetune_bert's --do_predict",
    "max_predict_samples": "distillation does not predict",
    "do_predict": "distillation does not predict; predict with the distilled model in finetune_bert",
}
DEFAULTS = dict(
    RECIPE_DEFAULTS,
    batching="length",  # batches of similar-length rows: far less padding (bench/recipe_vs_baselines.py)
    learning_rate=1e-4,
    num_train_epochs=3,
    per_device_train_batch_size=32,
    per_device_eval_batch_size=64,
    warmup_steps=0.1,
)


def validate(arguments) -> None:
    """What this recipe refuses once its arguments are parsed (`hfopt compare --dry_run` calls it too)."""
    model_args, data_args, student_args, strategy_args, compression_args, run_args, training_args = arguments
    reject_unsupported(arguments, UNSUPPORTED, RECIPE)
    if model_args.model_name_or_path and (student_args.student_layers or student_args.student_num_layers != 3):
        raise InputError(
            "--student_num_layers/--student_layers make the student from the teacher; they do not go "
            "with --model_name_or_path (a student of its own)"
        )
    if not student_args.teacher_model_name_or_path:
        raise InputError("name the fine-tuned teacher with --teacher_model_name_or_path")


@recipe_main
def main(argv: list[str] | None = None) -> dict:
    *arguments, config = parse_args(ARGUMENTS, RECIPE, argv, defaults=DEFAULTS)
    model_args, data_args, student_args, strategy_args, compression_args, run_args, training_args = arguments
    validate(arguments)
    teacher_path = student_args.teacher_model_name_or_path
    plan = begin_run(training_args, run_args, data_args, config, arguments, title=RECIPE)
    if plan.complete:
        return report_complete_run(training_args, RECIPE)

    # Data, checked before any model is loaded; labels must be the teacher's.
    raw, sources = load_raw_datasets(
        data_args, seed=training_args.seed, cache_dir=model_args.cache_dir, token=model_args.token
    )
    columns = detect_classification_columns(raw, data_args, sources)
    check_texts(raw, columns.text, sources)
    compute_metrics, metric_names = task_metrics("classification", run_args.metric)
    check_metric_for_best_model(training_args, metric_names, RECIPE)
    teacher = load_trained_model(AutoModelForSequenceClassification, teacher_path, model_args, role="teacher")
    labels = teacher_label_space(raw, columns.label, sources, teacher.config)

    model_args.tokenizer_name = model_args.tokenizer_name or teacher_path
    tokenizer = load_tokenizer(model_args)

    def model_init(trial=None):  # a fresh student per hyperparameter-search trial, else called once
        if model_args.model_name_or_path:
            student = load_trained_model(
                AutoModelForSequenceClassification,
                model_args.model_name_or_path,
                model_args,
                role="student",
                dropout=model_args.dropout,
            )
        else:
            student = student_from_teacher(
                teacher, student_args.student_num_layers, student_args.student_layers, dropout=model_args.dropout
            )
        return prepare_model(student, compression_args)

    with training_args.main_process_first(desc="tokenizing"):
        tokenized = tokenize_for_classification(
            raw, tokenizer, columns, labels, data_args.max_seq_length, data_args.preprocessing_num_workers
        )

    collator = padding_collator(tokenizer, training_args)
    trainer = build_trainer(
        DistillationTrainer,
        model_init,
        strategy_args,
        compression_args,
        teacher_model=teacher,
        args=training_args,
        train_dataset=tokenized["train"] if training_args.do_train else None,
        eval_dataset=tokenized["validation"] if training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_metrics,
    )
    if strategy_args.hp_search_trials:
        return search(trainer, plan, strategy_args, "eval_accuracy", metric_names)
    results = train(trainer, plan, run_args)
    if training_args.do_eval:
        results.update(trainer.evaluate_teacher(tokenized["validation"]))
        if trainer.is_world_process_zero():
            comparison = compare(teacher, trainer.model, tokenizer, raw["validation"], columns.text, results)
            results.update({f"comparison_{k}": v for k, v in comparison["summary"].items()})
            write_json_atomic(Path(training_args.output_dir) / "distillation_report.json", comparison)
            print(format_comparison(comparison))
    if run_args.measure_latency:
        texts = [" ".join(str(row[c]) for c in columns.text) for row in raw["validation"]]
        results.update(trained_model_latency(trainer, texts))
    finish_run(trainer, results, plan=plan, keep_checkpoints=run_args.keep_checkpoints)
    return results


def teacher_label_space(raw, label_column: str, sources, teacher_config) -> LabelSpace:
    """The data's labels in the teacher's order; a label the teacher does not know is an error."""
    data_labels = LabelSpace.from_datasets(raw, label_column, sources)
    teacher_names = [teacher_config.id2label[i] for i in range(teacher_config.num_labels)]
    if data_labels.string_labels:
        if set(data_labels.names) - set(teacher_names):
            raise InputError(
                f"labels {sorted(set(data_labels.names) - set(teacher_names))} of the data are not "
                f"classes of the teacher ({', '.join(teacher_names)})"
            )
        return LabelSpace(names=teacher_names, string_labels=True)
    if data_labels.num_labels > teacher_config.num_labels:
        raise InputError(f"the data has {data_labels.num_labels} classes, the teacher {teacher_config.num_labels}")
    return LabelSpace(names=[str(i) for i in range(teacher_config.num_labels)], string_labels=False)


def compare(teacher, student, tokenizer, validation, text_columns, results) -> dict:
    """Accuracy, parameters and CPU latency (batch 1 and 16) of teacher and student, retention and speed-up."""
    texts = [" ".join(str(row[c]) for c in text_columns) for row in validation.select(range(min(64, len(validation))))]
    rows = latency_rows({"teacher": teacher.to("cpu"), "student": student.to("cpu")}, tokenizer, texts)
    speedups(rows, "teacher")
    for name, model, accuracy in (
        ("teacher", teacher, results["teacher_eval_accuracy"]),
        ("student", student, results["eval_accuracy"]),
    ):
        rows[name].update(accuracy=accuracy, parameters=model.num_parameters())
    summary = {
        "retention": rows["student"]["accuracy"] / max(rows["teacher"]["accuracy"], 1e-12),
        "parameter_ratio": rows["student"]["parameters"] / rows["teacher"]["parameters"],
        "speedup_b1": rows["student"]["speedup_b1"],
        "speedup_b16": rows["student"]["speedup_b16"],
    }
    return {"models": rows, "summary": summary}


def format_comparison(comparison) -> str:
    rows, summary = comparison["models"], comparison["summary"]
    header = f"{'':10} {'accuracy':>9} {'parameters':>12} {'b1 p50 ms':>10} {'b16 p50 ms':>11}"
    lines = [header] + [
        f"{name:10} {r['accuracy']:9.4f} {r['parameters']:12,} {r['latency_b1_p50_ms']:10.2f} "
        f"{r['latency_b16_p50_ms']:11.2f}"
        for name, r in rows.items()
    ]
    lines.append(
        f"retention {summary['retention']:.3f}, speed-up {summary['speedup_b1']:.2f}x (batch 1), "
        f"{summary['speedup_b16']:.2f}x (batch 16), parameters x{summary['parameter_ratio']:.2f}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
