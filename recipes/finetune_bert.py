"""Fine-tune a BERT-style encoder for sequence classification (single sentences or sentence pairs).

    accelerate launch recipes/finetune_bert.py                                  # bundled demo, offline
    accelerate launch recipes/finetune_bert.py --config recipes/configs/bert_sst2.yaml
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml recipes/finetune_bert.py \
        --model_name_or_path bert-base-uncased --train_file train.csv --validation_file dev.csv

Flow: arguments (defaults < YAML < flags) → seed and logging → data, checked before any model is loaded →
model and tokenizer → tokenization (main process first) → Trainer → train (resuming from the last checkpoint
in output_dir) → evaluate → predict → results, run record and table.
"""

from pathlib import Path

import numpy as np
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

from hfopt.args import (
    RECIPE_DEFAULTS,
    DataArguments,
    ModelArguments,
    PeftArguments,
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
from hfopt.metrics import classification_metrics
from hfopt.models import apply_lora, demo_model_path, load_config, load_model, load_tokenizer, use_batch_mean_loss
from hfopt.run import (
    checkpoint_to_resume,
    exit_on_input_error,
    finish_run,
    logger,
    start_run,
    train_and_save,
    write_json_atomic,
    write_text_atomic,
)
from hfopt.strategies import apply_strategies, check_strategies, search_hyperparameters

RECIPE = "finetune_bert"
ARGUMENTS = (ModelArguments, DataArguments, StrategyArguments, PeftArguments, RunArguments, TrainingArguments)
DEMO_DATA = Path(__file__).resolve().parent / "data" / "sentiment"
# Without data arguments the recipe runs the offline demo on the bundled sentiment data (and without
# --model_name_or_path, with the pretrained MiniLM of the `demo` extra).
DEMO = dict(
    train_file=str(DEMO_DATA / "train.csv"),
    validation_file=str(DEMO_DATA / "validation.csv"),
    test_file=str(DEMO_DATA / "test.csv"),
    do_predict=True,
)
DEFAULTS = dict(
    RECIPE_DEFAULTS,
    learning_rate=5e-5,
    num_train_epochs=3,
    per_device_train_batch_size=16,
    per_device_eval_batch_size=64,
    warmup_steps=0.1,
)


@exit_on_input_error
def main(argv=None):
    model_args, data_args, strategy_args, peft_args, run_args, training_args = parse_args(
        ARGUMENTS, RECIPE, argv, defaults=DEFAULTS, demo=DEMO
    )
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = training_args.hfopt_config["model_name_or_path"] = demo_model_path()
    start_run(training_args)
    check_strategies(strategy_args, training_args)

    # Data, checked before any model is loaded.
    raw = load_raw_datasets(data_args, seed=training_args.seed, cache_dir=model_args.cache_dir, token=model_args.token)
    columns = detect_classification_columns(raw, data_args)
    check_texts(raw, columns.text)
    labels = LabelSpace.from_datasets(raw, columns.label, num_labels=model_args.num_labels)
    logger.info("Classes: %s; text column(s): %s", labels.names, columns.text)

    tokenizer = load_tokenizer(model_args)
    config = load_config(model_args, **labels.model_kwargs())

    def model_init(trial=None):  # a fresh model per hyperparameter-search trial, else called once
        model = load_model(AutoModelForSequenceClassification, model_args, config, tokenizer,
                           ignore_mismatched_sizes=model_args.ignore_mismatched_sizes)
        use_batch_mean_loss(model)
        return apply_lora(model, peft_args, task_type="SEQ_CLS")

    with training_args.main_process_first(desc="tokenizing"):
        tokenized = tokenize_for_classification(
            raw, tokenizer, columns, labels, data_args.max_seq_length, data_args.preprocessing_num_workers
        )

    trainer = Trainer(
        model=None if strategy_args.hp_search_trials else model_init(),
        model_init=model_init if strategy_args.hp_search_trials else None,
        args=training_args,
        train_dataset=tokenized["train"] if training_args.do_train else None,
        eval_dataset=tokenized["validation"] if training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=padding_collator(tokenizer, training_args),
        compute_metrics=classification_metrics,
    )
    apply_strategies(trainer, strategy_args, tokenizer)
    if trainer.is_world_process_zero():
        save_config(training_args.hfopt_config, training_args.output_dir)
    if strategy_args.hp_search_trials:
        best = search_hyperparameters(trainer, strategy_args.hp_search_trials)
        if trainer.is_world_process_zero():
            best_trial = {"objective": best.objective, "hyperparameters": best.hyperparameters, "run_id": best.run_id}
            write_json_atomic(Path(training_args.output_dir) / "best_trial.json", best_trial)
            print(f"Best trial: eval_accuracy {best.objective:.4f} with {best.hyperparameters}")
        return best

    results = {}
    if training_args.do_train:
        checkpoint = checkpoint_to_resume(training_args, start_fresh=run_args.start_fresh)
        results.update(train_and_save(trainer, checkpoint))
    if training_args.do_eval:
        results.update(trainer.evaluate())
    if training_args.do_predict and "test" in tokenized:
        test = tokenized["test"]
        labelled = "labels" in test.column_names and min(test["labels"]) >= 0
        if not labelled and "labels" in test.column_names:  # unlabelled test rows (-1, as in GLUE)
            test = test.remove_columns("labels")
        prediction = trainer.predict(test, metric_key_prefix="test")
        if labelled:
            results.update(prediction.metrics)
        if trainer.is_world_process_zero():
            predicted = np.argmax(prediction.predictions, axis=-1)
            rows = ["index\tprediction"] + [f"{i}\t{labels.names[p]}" for i, p in enumerate(predicted)]
            write_text_atomic(Path(training_args.output_dir) / "predictions.tsv", "\n".join(rows) + "\n")
    finish_run(trainer, results, title=RECIPE)
    return results


if __name__ == "__main__":
    main()
