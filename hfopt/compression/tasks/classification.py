"""Sequence classification as a compression task: accuracy and F1 on length-sorted batches, a forward pass for
latency, and the labelled rows as training data.

Example::

    task = load_task("classification", model, tokenizer, "dev.csv")
    task.evaluate(model)                 # {"accuracy": 0.91, "f1": 0.90}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from ...latency import latency_rows
from .base import CompressionTask, logits_of

__all__ = ["ClassificationTask"]

BATCH_SIZE = 16  # evaluation rows per batch


@dataclass
class ClassificationTask(CompressionTask):
    """Texts (the text columns of a row joined by a space) and their class ids, both in the file's order."""

    name: ClassVar[str] = "classification"
    labels: list[int] = field(default_factory=list)

    @classmethod
    def from_rows(cls, rows, columns, model, tokenizer, **options) -> ClassificationTask:
        """The task of `rows` (a `datasets.Dataset`) whose `columns` (a ClassificationColumns) name the text and
        label columns; labels must be classes of `model` (by name or id)."""
        config = model.config
        names = [config.id2label[i] for i in range(config.num_labels)]
        values = rows[columns.label]
        if all(isinstance(v, str) for v in values):
            missing = sorted(set(values) - set(names))
            if missing:
                raise InputError(f"labels {missing[:5]} are not classes of the model ({', '.join(names[:10])})")
            labels = [names.index(v) for v in values]
        else:
            bad = [
                v
                for v in values
                if not (isinstance(v, (int, float)) and float(v).is_integer() and 0 <= int(v) < len(names))
            ]  # a fraction is never rounded to a class
            if bad:
                raise InputError(f"label {bad[0]!r} is outside the model's {len(names)} classes")
            labels = [int(v) for v in values]
        texts = [" ".join(str(row[c]) for c in columns.text) for row in rows]
        return cls(tokenizer, texts, labels=labels, **options)

    @property
    def order(self) -> list[int]:
        """Row indices sorted by text length: the evaluation batches' order (little padding, to which dynamic
        int8 activations are sensitive)."""
        return sorted(range(len(self.texts)), key=lambda i: len(self.texts[i]))

    def _metric_batches(self) -> list[dict]:
        order = self.order
        return [
            dict(
                self.tokenizer(
                    [self.texts[j] for j in order[i : i + BATCH_SIZE]],
                    padding=True,
                    truncation=True,
                    max_length=self.max_input_length,
                    return_tensors="pt",
                )
            )
            for i in range(0, len(order), BATCH_SIZE)
        ]

    @torch.inference_mode()
    def predictions(self, model) -> tuple[np.ndarray, np.ndarray]:
        """(the model's predicted class, the label) of each row, in `order`."""
        predictions = np.concatenate(
            [logits_of(model(**batch)).float().argmax(-1).numpy() for batch in self.metric_batches]
        )
        return predictions, np.array([self.labels[j] for j in self.order])

    def right_rows(self, model) -> np.ndarray:
        """Whether `model` is right on each row, in `order` (its accuracy is their mean)."""
        return np.equal(*self.predictions(model))

    def evaluate(self, model) -> dict[str, float]:
        from sklearn.metrics import f1_score

        predictions, labels = self.predictions(model)
        average = "binary" if len(set(self.labels)) <= 2 and max(self.labels) <= 1 else "macro"
        return {
            "accuracy": float((predictions == labels).mean()),
            "f1": float(f1_score(labels, predictions, average=average, zero_division=0)),
        }

    def importance_batches(self, limit: int = 256, batch_size: int = 32) -> list[dict]:
        encoded = self.tokenizer(
            self.texts[:limit], padding=True, truncation=True, max_length=self.max_input_length, return_tensors="pt"
        )
        encoded["labels"] = torch.tensor(self.labels[:limit])
        n = len(encoded["input_ids"])
        return [{k: v[i : i + batch_size] for k, v in encoded.items()} for i in range(0, n, batch_size)]

    def latency(self, models: dict[str, nn.Module], repeats: int = 20) -> dict[str, dict[str, float]]:
        """A forward pass, at batch 1 and 16."""
        return latency_rows(models, self.tokenizer, self.texts, repeats=repeats)

    def train_dataset(self):
        """input_ids, attention_mask (and token_type_ids where the tokenizer makes them) truncated to the
        model's input limit, and `labels`, the class id of each row."""
        from datasets import Dataset

        def encode(batch):
            return self.tokenizer(batch["text"], truncation=True, max_length=self.max_input_length)

        rows = Dataset.from_dict({"text": self.texts, "labels": self.labels})
        return rows.map(encode, batched=True, remove_columns=["text"], desc="Tokenizing the training rows")

    def data_collator(self):
        """`DataCollatorWithPadding`: each batch padded to its longest row."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self._tokenizer_with_padding())
