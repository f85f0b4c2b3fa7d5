"""What a compression report measures, by task: the evaluation data (checked against the model), the task
metric, labelled batches for importance scores, and latency on that task's inputs.

| task | detected from | metric | latency |
|---|---|---|---|
| classification | `*ForSequenceClassification` | accuracy, F1 | a forward pass, batch 1 and 16 |
| causal_lm | `*LMHeadModel`, `*ForCausalLM` | perplexity, next-token accuracy | generation, per new token |
| seq2seq | `*ForConditionalGeneration`, `*MTModel` | BLEU, chrF (greedy) | generation, per new token |

Example::

    task = load_task("causal_lm", model, tokenizer, "valid.txt", source="eval_file valid.txt")
    task.evaluate(model)          # {"perplexity": 41.2, "accuracy": 0.31}
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..latency import latency_rows

__all__ = ["HEADLINE", "TASKS", "CompressionTask", "detect_task", "load_task", "task_auto_class"]

TASKS = ("classification", "causal_lm", "seq2seq")
# The metric each task's deltas are about, and whether higher is better.
HEADLINE = {"classification": ("accuracy", True), "causal_lm": ("perplexity", False), "seq2seq": ("bleu", True)}


def detect_task(config) -> str:
    """The task of a model folder, from its config's `architectures`."""
    names = list(getattr(config, "architectures", None) or [])
    for name in names:
        if name.endswith("ForSequenceClassification"):
            return "classification"
        if name.endswith(("LMHeadModel", "ForCausalLM")):
            return "causal_lm"
        if name.endswith(("ForConditionalGeneration", "MTModel")):
            return "seq2seq"
    raise InputError(
        f"cannot tell the task of a model whose architectures are {names or 'not recorded'}; pass "
        f"--task ({', '.join(TASKS)})"
    )


def task_auto_class(task: str):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    return {
        "classification": AutoModelForSequenceClassification,
        "causal_lm": AutoModelForCausalLM,
        "seq2seq": AutoModelForSeq2SeqLM,
    }[task]


def _logits(output):
    return output.logits if hasattr(output, "logits") else output[0]


@dataclass
class CompressionTask:
    """The evaluation data of one task and how to score and time a model on it."""

    name: str
    tokenizer: Any
    texts: list[str]  # latency inputs: sentences, prompts or sources
    metric_batches: list[dict] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    max_new_tokens: int = 16  # generated per latency measurement
    max_target_length: int = 128  # generation limit for the seq2seq metric
    max_input_length: int = 128  # tokens per input: at most the model's positions

    @property
    def headline(self) -> tuple[str, bool]:
        return HEADLINE[self.name]

    # --- the task metric -------------------------------------------------------------------------------------

    @torch.inference_mode()
    def evaluate(self, model) -> dict[str, float]:
        """The task metric of `model` (a PyTorch model or anything called like one that returns logits)."""
        if self.name == "classification":
            predictions = np.concatenate(
                [_logits(model(**batch)).float().argmax(-1).numpy() for batch in self.metric_batches]
            )
            labels = np.array(self.labels)
            from sklearn.metrics import f1_score

            average = "binary" if len(set(self.labels)) <= 2 and max(self.labels) <= 1 else "macro"
            return {
                "accuracy": float((predictions == labels).mean()),
                "f1": float(f1_score(labels, predictions, average=average, zero_division=0)),
            }
        if self.name == "causal_lm":
            nll, correct, count = 0.0, 0, 0
            for batch in self.metric_batches:
                logits = _logits(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))
                logits, targets = logits[:, :-1].float(), batch["input_ids"][:, 1:]
                nll += float(
                    F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
                )
                correct += int((logits.argmax(-1) == targets).sum())
                count += targets.numel()
            return {"perplexity": math.exp(min(nll / count, 700)), "accuracy": correct / count}
        import sacrebleu

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
        return {
            "bleu": sacrebleu.corpus_bleu(hypotheses, [self.references]).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, [self.references]).score,
        }

    # --- importance scores for structured pruning -----------------------------------------------------------

    def importance_batches(self, limit: int = 256, batch_size: int = 32) -> list[dict]:
        """Labelled batches (the model returns a loss on them) for Taylor importance scores."""
        if self.name == "classification":
            encoded = self.tokenizer(
                self.texts[:limit], padding=True, truncation=True, max_length=self.max_input_length, return_tensors="pt"
            )
            encoded["labels"] = torch.tensor(self.labels[:limit])
        elif self.name == "causal_lm":
            ids = torch.cat([b["input_ids"] for b in self.metric_batches])[:limit]
            encoded = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        else:
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

    # --- latency --------------------------------------------------------------------------------------------

    def latency(self, models: dict[str, nn.Module], repeats: int = 20) -> dict[str, dict[str, float]]:
        """Latency of every model, timed interleaved: a forward pass (classification) or greedy generation of
        `max_new_tokens` tokens, per token (language models and seq2seq), at batch 1 and 16."""
        if self.name == "classification":
            return latency_rows(models, self.tokenizer, self.texts, repeats=repeats)
        tokenizer = copy.copy(self.tokenizer)
        if self.name == "causal_lm":
            tokenizer.padding_side = "left"  # batched generation continues every prompt from its last token
        max_length = min(16 if self.name == "causal_lm" else 64, self.max_input_length // 2)
        # a causal LM's prompt and new tokens share its positions; a decoder starts from one token
        room = self.max_input_length - (max_length if self.name == "causal_lm" else 1)
        new = min(self.max_new_tokens, room)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        def generate(model, inputs):
            model.generate(
                **inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False, num_beams=1, pad_token_id=pad
            )

        return latency_rows(
            models, tokenizer, self.texts, repeats=max(3, repeats // 4), run=generate, per=new, max_length=max_length
        )


def load_task(
    name: str,
    model,
    tokenizer,
    eval_file: str,
    model_dir: str,
    text_column_names=None,
    label_column_name=None,
    source_lang=None,
    target_lang=None,
    max_eval_samples: int | None = None,
    max_new_tokens: int = 16,
    role: str = "eval_file",
) -> CompressionTask:
    """Read `eval_file` for task `name` and check it fits the model; a file that does not fit is one InputError
    naming the file's `role` (the flag it came from), the task, the model and what is wrong."""
    from ..args import DataArguments
    from ..data import LM_EXTENSIONS, TABLE_EXTENSIONS, check_texts, detect_classification_columns, load_raw_datasets
    from ..models import model_max_positions

    data_args = DataArguments(
        validation_file=eval_file,
        text_column_names=text_column_names,
        label_column_name=label_column_name,
        max_eval_samples=max_eval_samples,
    )
    positions = model_max_positions(model.config)
    limit = min(128, positions) if positions else 128  # longer inputs would index past the position embeddings
    try:
        raw, sources = load_raw_datasets(
            data_args, extensions=LM_EXTENSIONS if name == "causal_lm" else TABLE_EXTENSIONS
        )
        if name == "classification":
            columns = detect_classification_columns(raw, data_args, sources)
            check_texts(raw, columns.text, sources)
            task = _classification(model, tokenizer, raw["validation"], columns, sources, limit)
        elif name == "causal_lm":
            task = _causal_lm(model, tokenizer, raw, sources, text_column_names, max_new_tokens)
        else:
            task = _seq2seq(tokenizer, raw, sources, source_lang, target_lang, max_new_tokens, limit)
    except InputError as err:
        raise InputError(f"{role} does not fit the {name} model {model_dir}: {err}") from None
    task.max_input_length = limit
    return task


def _classification(model, tokenizer, rows, columns, sources, limit: int) -> CompressionTask:
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
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # length-sorted: little padding, to which
    batches = [
        dict(
            tokenizer(
                [texts[j] for j in order[i : i + 16]],
                padding=True,
                truncation=True,  # dynamic int8
                max_length=limit,
                return_tensors="pt",
            )
        )  # activations are sensitive
        for i in range(0, len(order), 16)
    ]
    return CompressionTask("classification", tokenizer, texts, batches, labels=[labels[j] for j in order])


def _causal_lm(model, tokenizer, raw, sources, text_column_names, max_new_tokens) -> CompressionTask:
    from ..data import check_block_size, detect_text_column, drop_blank_texts, tokenize_for_causal_lm

    column = detect_text_column(raw, sources, (text_column_names or [None])[0])
    raw = drop_blank_texts(raw, column, sources)
    block_size = min(128, check_block_size(None, model.config, tokenizer))
    blocks = tokenize_for_causal_lm(raw, tokenizer, column, block_size, sources)["validation"]
    ids = torch.tensor(blocks["input_ids"])
    batches = [
        {"input_ids": ids[i : i + 8], "attention_mask": torch.ones_like(ids[i : i + 8])} for i in range(0, len(ids), 8)
    ]
    return CompressionTask(
        "causal_lm", tokenizer, list(raw["validation"][column]), batches, max_new_tokens=max_new_tokens
    )


def _seq2seq(tokenizer, raw, sources, source_lang, target_lang, max_new_tokens, limit: int) -> CompressionTask:
    from ..data import translation_pairs

    if not (source_lang and target_lang):
        first = raw["validation"][0]
        found = list(first["translation"]) if "translation" in first else list(first)
        raise InputError(f"name the language pair with --source_lang and --target_lang (found: {', '.join(found)})")
    pairs = translation_pairs(raw, source_lang, target_lang, sources)["validation"]
    texts, references = list(pairs["source"]), list(pairs["target"])
    batches = [
        dict(tokenizer(texts[i : i + 16], padding=True, truncation=True, max_length=limit, return_tensors="pt"))
        for i in range(0, len(texts), 16)
    ]
    return CompressionTask("seq2seq", tokenizer, texts, batches, references=references, max_new_tokens=max_new_tokens)
