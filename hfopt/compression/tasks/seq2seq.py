"""Sequence-to-sequence generation (translation) as a compression task: BLEU and chrF of greedy decoding,
generation for latency, and the source/target pairs as training data.

Example::

    task = load_task("seq2seq", model, tokenizer, "valid.jsonl", source_lang="en", target_lang="de")
    task.evaluate(model)                 # {"bleu": 31.5, "chrf": 58.2}
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from ...latency import latency_rows
from .base import CompressionTask

__all__ = ["Seq2SeqTask"]

BATCH_SIZE = 16  # evaluation sources per batch


@dataclass
class Seq2SeqTask(CompressionTask):
    """Sources (`texts`) and their reference translations, in the file's order."""

    name: ClassVar[str] = "seq2seq"
    references: list[str] = field(default_factory=list)
    max_target_length: int = 128  # generation limit for the metric

    @classmethod
    def from_raw(cls, raw, sources, tokenizer, source_lang=None, target_lang=None, **options) -> Seq2SeqTask:
        """The task of the `validation` split of `raw`: a `translation` column or one column per language."""
        from ...data import translation_pairs

        if not (source_lang and target_lang):
            first = raw["validation"][0]
            found = list(first["translation"]) if "translation" in first else list(first)
            raise InputError(f"name the language pair with --source_lang and --target_lang (found: {', '.join(found)})")
        pairs = translation_pairs(raw, source_lang, target_lang, sources)["validation"]
        return cls(tokenizer, list(pairs["source"]), references=list(pairs["target"]), **options)

    def _metric_batches(self) -> list[dict]:
        return [
            dict(
                self.tokenizer(
                    self.texts[i : i + BATCH_SIZE],
                    padding=True,
                    truncation=True,
                    max_length=self.max_input_length,
                    return_tensors="pt",
                )
            )
            for i in range(0, len(self.texts), BATCH_SIZE)
        ]

    def evaluate(self, model) -> dict[str, float]:
        """BLEU and chrF of greedy translations of the sources against the references."""
        import sacrebleu

        hypotheses = self.translations(model)
        return {
            "bleu": sacrebleu.corpus_bleu(hypotheses, [self.references]).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, [self.references]).score,
        }

    def bleu_rows(self, model) -> np.ndarray:
        """Per row, sacrebleu's BLEU statistics of its greedy translation (what a paired bootstrap of a BLEU
        change resamples: `hfopt.metrics.paired_bleu_change`); `bleu_of_rows` of them is `evaluate`'s BLEU."""
        import sacrebleu

        hypotheses = self.translations(model)
        return np.array(sacrebleu.BLEU()._extract_corpus_statistics(hypotheses, [self.references]), dtype=float)

    @torch.inference_mode()
    def translations(self, model) -> list[str]:
        """Greedy translations of the sources, in order."""
        hypotheses = []
        # the decoder's start token takes a position too; a limit saved in the model's generation config (the
        # translation recipe saves the one it evaluated with) is kept, so the report scores what the recipe did
        new_tokens = min(self.max_target_length, self.max_input_length - 1)
        generation = getattr(model, "generation_config", None)
        saved = generation.to_diff_dict().get("max_length") if generation is not None else None
        if isinstance(saved, int) and saved > 1:
            new_tokens = min(new_tokens, saved - 1)
        for batch in self.metric_batches:
            output = model.generate(**batch, max_new_tokens=new_tokens, num_beams=1, do_sample=False)
            hypotheses += [t.strip() for t in self.tokenizer.batch_decode(output, skip_special_tokens=True)]
        return hypotheses

    def importance_batches(self, limit: int = 256, batch_size: int = 32) -> list[dict]:
        encoded = self.tokenizer(
            self.texts[:limit],
            text_target=self.references[:limit],
            padding=True,
            truncation=True,
            max_length=self.max_input_length,
            return_tensors="pt",
        )
        encoded["labels"][encoded["labels"] == self.tokenizer.pad_token_id] = -100
        n = len(encoded["input_ids"])
        return [{k: v[i : i + batch_size] for k, v in encoded.items()} for i in range(0, n, batch_size)]

    def latency(self, models: dict[str, nn.Module], repeats: int = 20) -> dict[str, dict[str, float]]:
        """Greedy generation of `max_new_tokens` tokens from sources of up to 64 tokens, per token, at batch 1
        and 16."""
        tokenizer = copy.copy(self.tokenizer)
        max_length = min(64, self.max_input_length // 2)
        new = min(self.max_new_tokens, self.max_input_length - 1)  # the decoder starts from one token
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        def generate(model, inputs):
            model.generate(
                **inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False, num_beams=1, pad_token_id=pad
            )

        return latency_rows(
            models, tokenizer, self.texts, repeats=max(3, repeats // 4), run=generate, per=new, max_length=max_length
        )

    def train_dataset(self):
        """input_ids and attention_mask of each source, and `labels`, the token ids of its reference, both
        truncated to the model's input limit."""
        from datasets import Dataset

        def encode(batch):
            encoded = self.tokenizer(batch["source"], truncation=True, max_length=self.max_input_length)
            targets = self.tokenizer(text_target=batch["target"], truncation=True, max_length=self.max_input_length)
            encoded["labels"] = targets["input_ids"]
            return encoded

        rows = Dataset.from_dict({"source": self.texts, "target": self.references})
        return rows.map(encode, batched=True, remove_columns=["source", "target"], desc="Tokenizing the training rows")

    def data_collator(self, model=None):
        """`DataCollatorForSeq2Seq`: inputs padded with the padding token, labels with -100 (with `model`, it
        also makes the decoder inputs from the labels; without, the model does)."""
        from transformers import DataCollatorForSeq2Seq

        return DataCollatorForSeq2Seq(self._tokenizer_with_padding(), model=model, label_pad_token_id=-100)
