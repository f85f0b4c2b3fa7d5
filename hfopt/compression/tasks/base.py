"""What every compression task shares: the task names and their headline metrics, the task of a model folder,
and `CompressionTask`, the interface each task class implements (evaluate, importance batches, latency, and
the training data of recovery fine-tuning and distillation).

Example::

    detect_task(AutoConfig.from_pretrained("outputs/finetune_gpt"))       # "causal_lm"
    task_auto_class("causal_lm")                                          # AutoModelForCausalLM
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from torch import nn

from ...errors import InputError

__all__ = ["TASKS", "CompressionTask", "detect_task", "task_auto_class"]

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
    """The transformers auto class of a task's models."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    return {
        "classification": AutoModelForSequenceClassification,
        "causal_lm": AutoModelForCausalLM,
        "seq2seq": AutoModelForSeq2SeqLM,
    }[task]


def logits_of(output):
    """The logits of a model's output (a ModelOutput, or the tuple of a model outside transformers)."""
    return output.logits if hasattr(output, "logits") else output[0]


@dataclass
class CompressionTask:
    """The data of one task read from one file, and how to score, time and train a model on it.

    Subclasses (`ClassificationTask`, `CausalLMTask`, `Seq2SeqTask`) are built by `load_task`, which checks the
    file against the model. The evaluation batches (`metric_batches`) are made on first use, or at load by
    default; `train_dataset()` tokenizes the same rows for a `Trainer` each time it is called, so a task read
    for training holds no tokenized copy of its file.
    """

    name: ClassVar[str] = ""
    tokenizer: Any
    texts: list[str]  # latency inputs: sentences, prompts or sources (one per row of the file)
    max_new_tokens: int = 16  # generated per latency measurement
    max_input_length: int = 128  # tokens per input: at most the model's positions
    context: str = ""  # "<role> does not fit the <task> model <dir>": what a data error found later starts with

    @property
    def headline(self) -> tuple[str, bool]:
        """(the metric the report's deltas are about, whether higher is better)."""
        return HEADLINE[self.name]

    @cached_property
    def metric_batches(self) -> list[dict]:
        """The tokenized evaluation batches `evaluate` runs (also ONNX static calibration's inputs)."""
        with self.checked():
            return self._metric_batches()

    @contextmanager
    def checked(self):
        """Data errors raised inside name the file, the task and the model, as those raised at load do."""
        try:
            yield
        except InputError as err:
            if not self.context or str(err).startswith(self.context):
                raise
            raise InputError(f"{self.context}: {err}") from None

    # --- the interface ----------------------------------------------------------------------------------------

    def _metric_batches(self) -> list[dict]:
        raise NotImplementedError

    def evaluate(self, model) -> dict[str, float]:
        """The task metric of `model` (a PyTorch model or anything called like one that returns logits)."""
        raise NotImplementedError

    def importance_batches(self, limit: int = 256, batch_size: int = 32) -> list[dict]:
        """Labelled batches (the model returns a loss on them) for Taylor importance scores."""
        raise NotImplementedError

    def latency(self, models: dict[str, nn.Module], repeats: int = 20) -> dict[str, dict[str, float]]:
        """Latency of every model, timed interleaved at batch 1 and 16."""
        raise NotImplementedError

    def train_dataset(self):
        """Per-example training features of the rows this task was read from (a `datasets.Dataset`), for a
        `Trainer` with `data_collator()`."""
        raise NotImplementedError

    def data_collator(self):
        """The transformers collator that pads `train_dataset()` examples into batches."""
        raise NotImplementedError

    def _tokenizer_with_padding(self):
        """The tokenizer, or a copy padding with its eos token when it has no padding token (GPT-2's)."""
        if self.tokenizer.pad_token is not None or self.tokenizer.eos_token is None:
            return self.tokenizer
        import copy

        tokenizer = copy.deepcopy(self.tokenizer)
        tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
