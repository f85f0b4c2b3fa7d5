"""Fine-tune a BERT-style encoder for sequence classification (single sentences or sentence pairs).

    accelerate launch recipes/finetune_bert.py                                  # bundled demo, offline
    accelerate launch recipes/finetune_bert.py --config recipes/configs/bert_sst2.yaml
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/finetune_bert.py \
        --model_name_or_path bert-base-uncased --train_file train.csv --validation_file dev.csv
    accelerate launch recipes/finetune_bert.py --model_type bert --config_overrides "num_hidden_layers=2" ...

Flow: arguments (defaults < YAML < flags) → seed, logging, threads → what to do with output_dir (resume only
into the same configuration) → data, checked before any model is loaded → tokenizer, config, model →
tokenization (main process first) → Trainer and strategies → train (resuming) → evaluate → predict →
results, run record and table.
"""

import hfopt  # noqa: F401  (first: it drops known-harmless third-party import-time lines, hfopt.quiet)

# isort: split
import logging
from pathlib import Path

import numpy as np
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

from hfopt.args import (
    RECIPE_DEFAULTS,
    CompressionArguments,
    DataArguments,
    ModelArguments,
    PeftArguments,
    RunArguments,
    StrategyArguments,
    parse_args,
)
from hfopt.data import (
    LabelSpace,
    check_texts,
    detect_classification_columns,
    load_raw_datasets,
    padding_collator,
    tokenize_for_classification,
)
from hfopt.latency import trained_model_latency
from hfopt.metrics import task_metrics
from hfopt.models import (
    check_max_length,
    check_model_task,
    demo_model_path,
    load_config,
    load_model,
    load_tokenizer,
)
from hfopt.run import (
    check_metric_for_best_model,
    finish_run,
    recipe_main,
    report_complete_run,
    write_text_atomic,
)
from hfopt.workflow import begin_run, build_trainer, prepare_model, search, train

RECIPE = "finetune_bert"
logger = logging.getLogger(f"hfopt.recipes.{RECIPE}")
ARGUMENTS = (
    ModelArguments,
    DataArguments,
    StrategyArguments,
    CompressionArguments,
    PeftArguments,
    RunArguments,
    TrainingArguments,
)
DEMO_DATA = Path(__file__).resolve().parent / "data" / "sentiment"
# Without data arguments the recipe runs the offline demo on the bundled sentiment data (and without a model,
# with the pretrained MiniLM of the `demo` extra).
DEMO = dict(
    train_file=str(DEMO_DATA / "train.csv"),
    validation_file=str(DEMO_DATA / "validation.csv"),
    test_file=str(DEMO_DATA / "test.csv"),
    do_predict=True,
)
DEFAULTS = dict(
    RECIPE_DEFAULTS,
    batching="length",  # batches of similar-length rows: far less padding (bench/recipe_vs_baselines.py)
    learning_rate=5e-5,
    num_train_epochs=3,
    per_device_train_batch_size=16,
    per_device_eval_batch_size=64,
    warmup_steps=0.1,
)


@recipe_main
def main(argv: list[str] | None = None) -> dict:
    *arguments, config = parse_args(ARGUMENTS, RECIPE, argv, defaults=DEFAULTS, demo=DEMO)
    model_args, data_args, strategy_args, compression_args, peft_args, run_args, training_args = arguments
    if not (model_args.model_name_or_path or model_args.config_name or model_args.model_type):
        model_args.model_name_or_path = config["model_name_or_path"] = demo_model_path()
    plan = begin_run(training_args, run_args, data_args, config, arguments, title=RECIPE)
    if plan.complete:
        return report_complete_run(training_args, RECIPE)

    # Data, checked before any model is loaded.
    raw, sources = load_raw_datasets(
        data_args, seed=training_args.seed, cache_dir=model_args.cache_dir, token=model_args.token
    )
    columns = detect_classification_columns(raw, data_args, sources)
    check_texts(raw, columns.text, sources)
    labels = LabelSpace.from_datasets(raw, columns.label, sources, num_labels=model_args.num_labels)
    logger.info("Classes: %s; text column(s): %s", labels.names, columns.text)
    compute_metrics, metric_names = task_metrics("classification", run_args.metric)
    check_metric_for_best_model(training_args, metric_names, RECIPE)

    # Without a model to start from (--model_type), a WordPiece tokenizer is trained on the training text.
    train_texts = (text for column in columns.text for text in raw["train"][column])
    tokenizer = load_tokenizer(model_args, train_texts=train_texts, kind="wordpiece")
    model_config = load_config(model_args, tokenizer, **labels.model_kwargs())
    check_model_task(model_config, AutoModelForSequenceClassification)  # a model that cannot do this task, by name
    check_max_length(data_args.max_seq_length, "max_seq_length", model_config)

    def model_init(trial=None):  # a fresh model per hyperparameter-search trial, else called once
        model = load_model(
            AutoModelForSequenceClassification,
            model_args,
            model_config,
            tokenizer,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        )
        return prepare_model(model, compression_args, peft_args, task_type="SEQ_CLS")

    with training_args.main_process_first(desc="tokenizing"):
        tokenized = tokenize_for_classification(
            raw, tokenizer, columns, labels, data_args.max_seq_length, data_args.preprocessing_num_workers
        )

    trainer = build_trainer(
        Trainer,
        model_init,
        strategy_args,
        compression_args,
        args=training_args,
        train_dataset=tokenized["train"] if training_args.do_train else None,
        eval_dataset=tokenized["validation"] if training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=padding_collator(tokenizer, training_args),
        compute_metrics=compute_metrics,
    )
    if strategy_args.hp_search_trials:
        return search(trainer, plan, strategy_args, "eval_accuracy", metric_names)
    results = train(trainer, plan, run_args, peft_args)
    if training_args.do_predict and "test" in tokenized:
        results.update(predict(trainer, tokenized["test"], labels, training_args.output_dir))
    if run_args.measure_latency:
        texts = [" ".join(str(row[c]) for c in columns.text) for row in raw["validation"]]
        results.update(trained_model_latency(trainer, texts))
    finish_run(trainer, results, plan=plan, keep_checkpoints=run_args.keep_checkpoints)
    return results


def predict(trainer, test, labels: LabelSpace, output_dir: str) -> dict:
    """Predict the test split and write predictions.tsv (the class name of each row); test metrics when the
    rows are labelled (unlabelled rows hold -1, as in GLUE)."""
    labelled = "labels" in test.column_names and min(test["labels"]) >= 0
    if not labelled and "labels" in test.column_names:
        test = test.remove_columns("labels")
    prediction = trainer.predict(test, metric_key_prefix="test")
    if trainer.is_world_process_zero():
        predicted = np.argmax(prediction.predictions, axis=-1)
        rows = ["index\tprediction"] + [f"{i}\t{labels.names[p]}" for i, p in enumerate(predicted)]
        write_text_atomic(Path(output_dir) / "predictions.tsv", "\n".join(rows) + "\n")
    return prediction.metrics if labelled else {}


if __name__ == "__main__":
    main()
