"""Distil a fine-tuned BERT-style classifier (the teacher) into a smaller student, and compare the two.

    accelerate launch recipes/distill_bert.py --teacher_model_name_or_path outputs/finetune_bert \
        --train_file train.csv --validation_file dev.csv --student_num_layers 3

Flow: arguments → data, checked against the teacher's label space → teacher, tokenizer → student (the
teacher's embeddings, head and every other block, or --model_name_or_path) → DistillationTrainer → train
(resuming) → evaluate student and teacher → CPU latency at batch 1 and 16 → comparison table and results.
"""

from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModelForSequenceClassification, Trainer

from hfopt.args import (
    RECIPE_DEFAULTS,
    DataArguments,
    ModelArguments,
    RunArguments,
    StrategyArguments,
    parse_args,
    save_config,
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
from hfopt.latency import batches_of, measure_latency
from hfopt.metrics import classification_metrics
from hfopt.models import check_model_source, hub_kwargs, load_tokenizer, use_batch_mean_loss
from hfopt.run import checkpoint_to_resume, exit_on_input_error, finish_run, start_run, train_and_save, write_json_atomic
from hfopt.strategies import apply_strategies, check_strategies

RECIPE = "distill_bert"


@dataclass
class StudentArguments:
    """Where the teacher comes from and how the student is made."""

    teacher_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The fine-tuned classification model to distil (path or hub id)."})
    student_num_layers: int = field(default=3, metadata={"help": "Blocks of the student made from the teacher."})
    student_layers: list[int] | None = field(
        default=None, metadata={"help": "0-based teacher blocks copied into the student. Unset: every other."})


ARGUMENTS = (ModelArguments, DataArguments, StudentArguments, StrategyArguments, RunArguments,
             DistillationTrainingArguments)
DEFAULTS = dict(
    RECIPE_DEFAULTS,
    learning_rate=1e-4,
    num_train_epochs=3,
    per_device_train_batch_size=32,
    per_device_eval_batch_size=64,
    warmup_steps=0.1,
)


@exit_on_input_error
def main(argv=None):
    model_args, data_args, student_args, strategy_args, run_args, training_args = parse_args(
        ARGUMENTS, RECIPE, argv, defaults=DEFAULTS
    )
    if not student_args.teacher_model_name_or_path:
        raise InputError("name the fine-tuned teacher with --teacher_model_name_or_path")
    start_run(training_args)
    check_strategies(strategy_args, training_args)
    teacher_path = student_args.teacher_model_name_or_path
    check_model_source(teacher_path)

    # Data, checked before any model is loaded; labels must be the teacher's.
    raw = load_raw_datasets(data_args, seed=training_args.seed, cache_dir=model_args.cache_dir, token=model_args.token)
    columns = detect_classification_columns(raw, data_args)
    check_texts(raw, columns.text)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path, **hub_kwargs(model_args))
    labels = teacher_label_space(raw, columns.label, teacher.config)

    model_args.tokenizer_name = model_args.tokenizer_name or teacher_path
    tokenizer = load_tokenizer(model_args)
    if model_args.model_name_or_path:
        student = AutoModelForSequenceClassification.from_pretrained(model_args.model_name_or_path,
                                                                     **hub_kwargs(model_args))
    else:
        student = student_from_teacher(teacher, student_args.student_num_layers, student_args.student_layers)
    use_batch_mean_loss(student)

    with training_args.main_process_first(desc="tokenizing"):
        tokenized = tokenize_for_classification(raw, tokenizer, columns, labels, data_args.max_seq_length,
                                                data_args.preprocessing_num_workers)

    collator = padding_collator(tokenizer, training_args)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=training_args,
        train_dataset=tokenized["train"] if training_args.do_train else None,
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=classification_metrics,
    )
    apply_strategies(trainer, strategy_args, tokenizer)
    if trainer.is_world_process_zero():
        save_config(training_args.hfopt_config, training_args.output_dir)

    results = {}
    if training_args.do_train:
        checkpoint = checkpoint_to_resume(training_args, start_fresh=run_args.start_fresh)
        results.update(train_and_save(trainer, checkpoint))
    results.update(trainer.evaluate())
    teacher_eval = Trainer(model=teacher, args=training_args, eval_dataset=tokenized["validation"],
                           data_collator=collator, compute_metrics=classification_metrics)
    results.update({k: v for k, v in teacher_eval.evaluate(metric_key_prefix="teacher_eval").items() if k != "epoch"})

    if trainer.is_world_process_zero():
        comparison = compare(teacher, trainer.model, tokenizer, raw["validation"], columns.text, results)
        results.update({f"comparison_{k}": v for k, v in comparison["summary"].items()})
        write_json_atomic(Path(training_args.output_dir) / "distillation_report.json", comparison)
        print(format_comparison(comparison))
    finish_run(trainer, results, title=RECIPE)
    return results


def teacher_label_space(raw, label_column: str, teacher_config) -> LabelSpace:
    """The data's labels in the teacher's order; a label the teacher does not know is an error."""
    data_labels = LabelSpace.from_datasets(raw, label_column)
    teacher_names = [teacher_config.id2label[i] for i in range(teacher_config.num_labels)]
    if data_labels.string_labels:
        if set(data_labels.names) - set(teacher_names):
            raise InputError(f"labels {sorted(set(data_labels.names) - set(teacher_names))} of the data are not "
                             f"classes of the teacher ({', '.join(teacher_names)})")
        return LabelSpace(names=teacher_names, string_labels=True)
    if data_labels.num_labels > teacher_config.num_labels:
        raise InputError(f"the data has {data_labels.num_labels} classes, the teacher {teacher_config.num_labels}")
    return LabelSpace(names=[str(i) for i in range(teacher_config.num_labels)], string_labels=False)


def compare(teacher, student, tokenizer, validation, text_columns, results) -> dict:
    """Accuracy, parameters and CPU latency (batch 1 and 16) of teacher and student, retention and speed-up."""
    texts = [" ".join(str(row[c]) for c in text_columns) for row in validation.select(range(min(64, len(validation))))]
    cpu_teacher, cpu_student = teacher.to("cpu"), student.to("cpu")
    rows = {"teacher": {"accuracy": results["teacher_eval_accuracy"], "parameters": teacher.num_parameters()},
            "student": {"accuracy": results["eval_accuracy"], "parameters": student.num_parameters()}}
    for batch_size in (1, 16):
        latency = measure_latency({"teacher": cpu_teacher, "student": cpu_student},
                                  batches_of(tokenizer, texts, batch_size), repeats=20 if batch_size == 1 else 10)
        for name in rows:
            rows[name][f"latency_b{batch_size}_p50_ms"] = latency[name]["p50_ms"]
            rows[name][f"latency_b{batch_size}_p90_ms"] = latency[name]["p90_ms"]
            rows[name]["threads"] = latency[name]["threads"]
    summary = {
        "retention": rows["student"]["accuracy"] / max(rows["teacher"]["accuracy"], 1e-12),
        "parameter_ratio": rows["student"]["parameters"] / rows["teacher"]["parameters"],
        "speedup_b1": rows["teacher"]["latency_b1_p50_ms"] / rows["student"]["latency_b1_p50_ms"],
        "speedup_b16": rows["teacher"]["latency_b16_p50_ms"] / rows["student"]["latency_b16_p50_ms"],
    }
    return {"models": rows, "summary": summary}


def format_comparison(comparison) -> str:
    rows, summary = comparison["models"], comparison["summary"]
    header = f"{'':10} {'accuracy':>9} {'parameters':>12} {'b1 p50 ms':>10} {'b16 p50 ms':>11}"
    lines = [header] + [f"{name:10} {r['accuracy']:9.4f} {r['parameters']:12,} {r['latency_b1_p50_ms']:10.2f} "
                        f"{r['latency_b16_p50_ms']:11.2f}" for name, r in rows.items()]
    lines.append(f"retention {summary['retention']:.3f}, speed-up {summary['speedup_b1']:.2f}x (batch 1), "
                 f"{summary['speedup_b16']:.2f}x (batch 16), parameters x{summary['parameter_ratio']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
