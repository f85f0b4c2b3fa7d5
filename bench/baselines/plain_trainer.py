"""The script a user writes without hfopt: a plain `transformers.Trainer` fine-tuning a classifier on a tsv of
(sentence, label), in one of two ways.

    python bench/baselines/plain_trainer.py MODEL TRAIN_TSV DEV_TSV OUT --padding max_length   # run_glue's way
    python bench/baselines/plain_trainer.py MODEL TRAIN_TSV DEV_TSV OUT --padding dynamic      # per-batch padding

`max_length` pads every example to 128 tokens at tokenization (what examples/pytorch/run_glue.py does by
default); `dynamic` pads each batch to its longest row (DataCollatorWithPadding). Writes OUT/all_results.json.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from datasets import load_dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    default_data_collator,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("train")
    parser.add_argument("dev")
    parser.add_argument("output_dir")
    parser.add_argument("--padding", choices=("max_length", "dynamic"), required=True)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    data = load_dataset("csv", data_files={"train": args.train, "dev": args.dev}, delimiter="\t", quoting=3)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    padding = "max_length" if args.padding == "max_length" else False
    data = data.map(
        lambda rows: tokenizer(rows["sentence"], padding=padding, truncation=True, max_length=128),
        batched=True,
        remove_columns=["sentence"],
    ).rename_column("label", "labels")
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)

    def accuracy(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=args.output_dir,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=64,
            learning_rate=args.learning_rate,
            warmup_steps=0.1,
            weight_decay=0.01,
            seed=args.seed,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        ),
        train_dataset=data["train"],
        eval_dataset=data["dev"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer) if args.padding == "dynamic" else default_data_collator,
        compute_metrics=accuracy,
    )
    metrics = trainer.train().metrics
    metrics.update({f"eval_{k}" if not k.startswith("eval_") else k: v for k, v in trainer.evaluate().items()})
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "all_results.json").write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
