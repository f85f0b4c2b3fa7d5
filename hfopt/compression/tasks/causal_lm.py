"""Causal language modelling as a compression task: perplexity and next-token accuracy, generation for latency,
and the rows as training data. Reads what `finetune_gpt.py` trains on: plain text (cut into blocks, every token
scored) and prompt/completion or `messages` (chat) rows, one example per row, where only the completion (the
assistant turns) is scored and learnt.

Example::

    task = load_task("causal_lm", model, tokenizer, "valid.jsonl")     # {"prompt": ..., "completion": ...} rows
    task.evaluate(model)                 # {"perplexity": 12.4, "accuracy": 0.52}: completion tokens only
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...latency import latency_rows
from .base import CompressionTask, logits_of

__all__ = ["CausalLMTask", "perplexity"]

BATCH_SIZE = 8  # evaluation blocks or examples per batch
BLOCK_SIZE = 128  # the longest block or example, at most the model's positions


def perplexity(nll: float, tokens: float) -> float:
    """exp of the mean token loss (capped where it would overflow)."""
    return math.exp(min(nll / tokens, 700))


@dataclass
class CausalLMTask(CompressionTask):
    """The rows read (`rows`, a `datasets.Dataset`) in `data_format` "text" (column `column`),
    "prompt_completion" or "messages"; `texts` are the latency prompts (the texts themselves, the prompts, or
    each conversation up to its first assistant turn)."""

    name: ClassVar[str] = "causal_lm"
    rows: Any = None
    sources: Any = None  # the DataSources naming the file in messages
    data_format: str = "text"
    column: str = "text"
    block_size: int = BLOCK_SIZE

    @classmethod
    def from_raw(
        cls,
        raw,
        sources,
        model,
        tokenizer,
        text_column_names=None,
        data_format: str = "auto",
        chat_template: str | None = None,
        **options,
    ) -> CausalLMTask:
        """The task of the `validation` split of `raw`: its format found as finetune_gpt.py finds it (a named
        text column means text), its rows checked."""
        from ...data import (
            check_block_size,
            check_lm_rows,
            detect_lm_format,
            detect_text_column,
            drop_blank_texts,
            use_chat_template,
        )

        if data_format in (None, "auto"):
            data_format = "text" if text_column_names else detect_lm_format(raw, sources)
        else:
            data_format = detect_lm_format(raw, sources, data_format)
        block_size = min(BLOCK_SIZE, check_block_size(None, model.config, tokenizer))
        column = "text"
        if data_format == "text":
            column = detect_text_column(raw, sources, (text_column_names or [None])[0])
            raw = drop_blank_texts(raw, column, sources)
            rows = raw["validation"]
            texts = list(rows[column])
        else:
            check_lm_rows(raw, sources, data_format)
            if data_format == "messages":
                use_chat_template(tokenizer, chat_template)
            rows = raw["validation"]
            texts = _prompts(rows, data_format, tokenizer)
        return cls(
            tokenizer,
            texts,
            rows=rows,
            sources=sources,
            data_format=data_format,
            column=column,
            block_size=block_size,
            **options,
        )

    # --- the examples -----------------------------------------------------------------------------------------

    def train_dataset(self):
        """Text: blocks of `block_size` tokens (texts joined, each ended by eos) with labels = input_ids and an
        attention mask. Prompt/completion and chat: one example per row (truncated to `block_size`), labels -100
        outside the completion (the assistant turns)."""
        from datasets import DatasetDict

        from ...data import tokenize_for_causal_lm, tokenize_for_sft

        raw = DatasetDict({"validation": self.rows})
        with self.checked():
            if self.data_format == "text":
                examples = tokenize_for_causal_lm(raw, self.tokenizer, self.column, self.block_size, self.sources)
            else:
                examples = tokenize_for_sft(
                    raw, self.tokenizer, self.data_format, self.block_size, self.sources, packing="none"
                )
        return examples["validation"]

    def data_collator(self):
        """Text blocks are all one length: `default_data_collator`. Examples of a row each:
        `DataCollatorForSeq2Seq` padding on the right, labels with -100."""
        if self.data_format == "text":
            from transformers import default_data_collator

            return default_data_collator
        from transformers import DataCollatorForSeq2Seq

        tokenizer = self._tokenizer_with_padding()
        if tokenizer.padding_side != "right":  # positions count from the first token: pad after it
            tokenizer = copy.deepcopy(tokenizer)
            tokenizer.padding_side = "right"
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)

    def _metric_batches(self) -> list[dict]:
        examples = self.train_dataset()
        if self.data_format == "text":
            ids = torch.tensor(examples["input_ids"])
            return [
                {"input_ids": ids[i : i + BATCH_SIZE], "attention_mask": torch.ones_like(ids[i : i + BATCH_SIZE])}
                for i in range(0, len(ids), BATCH_SIZE)
            ]
        return self._collated(examples, len(examples), BATCH_SIZE)

    def _collated(self, examples, limit: int, batch_size: int) -> list[dict]:
        collate = self.data_collator()
        n = min(limit, len(examples))
        return [dict(collate([examples[j] for j in range(i, min(i + batch_size, n))])) for i in range(0, n, batch_size)]

    # --- the task metric --------------------------------------------------------------------------------------

    @torch.inference_mode()
    def row_scores(self, model) -> np.ndarray:
        """Per row (a text block, or an example): the summed negative log-likelihood of its scored tokens, their
        count, and how many of them were the model's most likely next token; shape (rows, 3)."""
        rows = []
        for batch in self.metric_batches:
            logits = logits_of(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))
            logits = logits[:, :-1].float()
            targets = batch.get("labels", batch["input_ids"])[:, 1:]
            nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # 0 where not scored (-100)
            scored = targets != -100
            right = (logits.argmax(-1) == targets) & scored
            rows.append(torch.stack([nll.double().sum(1), scored.sum(1).double(), right.sum(1).double()], dim=1))
        return torch.cat(rows).numpy()

    def row_losses(self, model) -> np.ndarray:
        """Per row, (summed negative log-likelihood, scored tokens): what a paired perplexity change is made of
        (`hfopt.metrics.paired_perplexity_change`)."""
        return self.row_scores(model)[:, :2]

    def evaluate(self, model) -> dict[str, float]:
        """Perplexity and next-token accuracy over every scored token: every token of text blocks, the
        completion tokens of prompt/completion and chat rows."""
        nll, count, correct = self.row_scores(model).sum(0)
        return {"perplexity": perplexity(nll, count), "accuracy": float(correct / count)}

    def importance_batches(self, limit: int = 256, batch_size: int = 32) -> list[dict]:
        if self.data_format != "text":
            return self._collated(self.train_dataset(), limit, batch_size)
        ids = torch.cat([b["input_ids"] for b in self.metric_batches])[:limit]
        encoded = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        return [{k: v[i : i + batch_size] for k, v in encoded.items()} for i in range(0, len(ids), batch_size)]

    # --- latency ----------------------------------------------------------------------------------------------

    def latency(self, models: dict[str, nn.Module], repeats: int = 20) -> dict[str, dict[str, float]]:
        """Greedy generation of `max_new_tokens` tokens after prompts of up to 16 tokens, per token, at batch 1
        and 16."""
        tokenizer = copy.copy(self.tokenizer)
        tokenizer.padding_side = "left"  # batched generation continues every prompt from its last token
        max_length = min(16, self.max_input_length // 2)
        new = min(self.max_new_tokens, self.max_input_length - max_length)  # prompt and new tokens share positions
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        def generate(model, inputs):
            model.generate(
                **inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False, num_beams=1, pad_token_id=pad
            )

        return latency_rows(
            models, tokenizer, self.texts, repeats=max(3, repeats // 4), run=generate, per=new, max_length=max_length
        )


def _prompts(rows, data_format: str, tokenizer) -> list[str]:
    """The latency prompt of each row: its prompt, or its conversation up to the first assistant turn with the
    template's generation prompt (the whole example when that is empty)."""
    prompts = []
    if data_format == "prompt_completion":
        for prompt, completion in zip(rows["prompt"], rows["completion"], strict=True):
            prompts.append(prompt if prompt and prompt.strip() else prompt + completion)
        return prompts
    for messages in rows["messages"]:
        first = next(i for i, turn in enumerate(messages) if turn["role"] == "assistant")
        text = (
            tokenizer.apply_chat_template(messages[:first], tokenize=False, add_generation_prompt=True) if first else ""
        )
        prompts.append(text if text.strip() else tokenizer.apply_chat_template(messages, tokenize=False))
    return prompts
