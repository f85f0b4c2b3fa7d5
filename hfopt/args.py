"""Argument dataclasses shared by the recipes, and the YAML + command-line parser built on HfArgumentParser.

Precedence, lowest first: the recipe's own defaults, then the YAML given with `--config`, then flags on the
command line. A flag is the dataclass field is the YAML key. Each dataclass checks its own values in
`__post_init__` (an `InputError` naming the flag); `parse_args` adds the checks that span two of them.

Example::

    model_args, data_args, run_args, training_args, config = parse_args(
        (ModelArguments, DataArguments, RunArguments, TrainingArguments),
        recipe="finetune_bert",
        argv=["--config", "recipes/configs/bert.yaml", "--learning_rate", "3e-5"],
    )
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import enum
import json
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from .errors import InputError, raised_in
from .hardware import check_precision, launch_defaults, pending_launch_changes

__all__ = [
    "RECIPE_DEFAULTS",
    "read_yaml_config",
    "ArgumentGroup",
    "BatchingArguments",
    "CompressionArguments",
    "DataArguments",
    "EarlyStoppingArguments",
    "FreezingArguments",
    "LanguageModelingArguments",
    "ModelArguments",
    "MonitoringArguments",
    "PeftArguments",
    "RegularizationArguments",
    "RunArguments",
    "ScheduleArguments",
    "SearchArguments",
    "StrategyArguments",
    "TranslationArguments",
    "argument_dataclasses",
    "argument_objects",
    "load_yaml",
    "parse_args",
    "reject_unsupported",
    "to_flags",
]

BATCHING = ("samples", "length", "tokens")  # --batching
WATCHDOG = ("stop", "skip")  # --watchdog
DATA_FORMATS = ("auto", "text", "prompt_completion", "messages")  # --data_format
LR_SCHEDULES = ("exponential", "step")  # --lr_schedule: the keys of hfopt.schedules.SCHEDULES (without torch)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


def _positive(name: str, value, allow_none: bool = True, minimum: float = 1) -> None:
    if value is None and allow_none:
        return
    _require(
        isinstance(value, (int, float)) and math.isfinite(value) and value >= minimum,
        f"{name} must be ≥ {minimum:g}, got {value}",
    )


def _fraction(name: str, value, upper_inclusive: bool = False) -> None:
    ok = 0 <= value <= 1 if upper_inclusive else 0 <= value < 1
    _require(ok, f"{name} must be in [0, 1{']' if upper_inclusive else ')'}, got {value}")


def _choices(obj) -> None:
    """A value outside its field's `choices` (given in Python, not through the parser, which checks them first)."""
    for f in dataclasses.fields(obj):
        choices, value = f.metadata.get("choices"), getattr(obj, f.name)
        if choices and value is not None and value not in choices:
            raise InputError(f"{f.name} must be one of {', '.join(map(str, choices))}, got '{value}'")


@dataclass
class ModelArguments:
    """Which pretrained model and tokenizer to start from, and how to load them.

    Args:
        model_name_or_path: hub id or local folder of the pretrained model (or a `save_compressed` folder).
        model_type: train from scratch with this architecture (with `config_overrides`).
        num_labels: number of classes; unset, it is read from the data.
    """

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id or local folder of the pretrained model. Unset: the recipe's bundled demo model."},
    )
    config_name: str | None = field(default=None, metadata={"help": "Config to use if not the model's own."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer to use if not the model's own."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloads from the hub are cached."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the hub model."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models (or `hf auth login`)."})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run code shipped inside a hub model folder. Off: only transformers' own classes load."},
    )
    num_labels: int | None = field(
        default=None,
        metadata={"help": "Number of classes. Unset: inferred from the data; set: labels outside it are an error."},
    )
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Allow a checkpoint whose classification head has another number of labels."}
    )
    model_type: str | None = field(
        default=None,
        metadata={
            "help": "Train from scratch with this architecture's default config (e.g. bert, gpt2, marian), "
            "when neither model_name_or_path nor config_name is given."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Comma-separated config changes for training from scratch, e.g. 'n_layer=4,n_embd=256'."},
    )
    dropout: float | None = field(
        default=None,
        metadata={
            "help": "Set every dropout probability of the model's config (hidden_dropout_prob, "
            "attention_probs_dropout_prob, resid_pdrop, dropout, ...). For one of them: config_overrides."
        },
    )
    tokenizer_vocab_size: int = field(
        default=2000,
        metadata={"help": "Vocabulary size of the tokenizer trained on the training data when no tokenizer is given."},
    )

    def __post_init__(self):
        _require(self.num_labels is None or self.num_labels >= 2, f"num_labels must be ≥ 2, got {self.num_labels}")
        if self.dropout is not None:
            _fraction("dropout", self.dropout)
        _positive("tokenizer_vocab_size", self.tokenizer_vocab_size, allow_none=False, minimum=10)


@dataclass
class DataArguments:
    """Where the data comes from, which columns to use and how much of it.

    Args:
        dataset_name: a hub dataset (or a local folder of data files).
        train_file: a local file: csv, tsv, json, jsonl, parquet or arrow (txt for causal LMs).
        max_train_samples: keep the first N training rows.
    """

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id, e.g. 'nyu-mll/glue'."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset config, e.g. 'sst2'."})
    train_file: str | None = field(
        default=None, metadata={"help": "Local training file (csv, tsv, json, jsonl, parquet, arrow)."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Local validation file."})
    test_file: str | None = field(default=None, metadata={"help": "Local test file, used with --do_predict."})
    text_column_names: list[str] | None = field(
        default=None,
        metadata={"help": "Text column(s); a pair for sentence-pair tasks. Unset: detected (sentence, text, ...)."},
    )
    label_column_name: str | None = field(default=None, metadata={"help": "Label column. Unset: 'label'/'labels'."})
    validation_split_percentage: float = field(
        default=10.0, metadata={"help": "Percent of train held out for validation when no validation split is given."}
    )
    max_seq_length: int | None = field(
        default=None,
        metadata={"help": "Truncate inputs to this many tokens. Unset: the tokenizer's limit. Padding is dynamic."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N validation rows."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only the first N test rows."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})

    def __post_init__(self):
        _require(
            0 < self.validation_split_percentage < 100,
            f"validation_split_percentage must be in (0, 100), got {self.validation_split_percentage:g}",
        )
        _positive("max_seq_length", self.max_seq_length, minimum=2)
        for name in ("max_train_samples", "max_eval_samples", "max_predict_samples", "preprocessing_num_workers"):
            _positive(name, getattr(self, name))
        if self.text_column_names is not None:
            _require(
                1 <= len(self.text_column_names) <= 2,
                f"text_column_names takes one or two columns, got {len(self.text_column_names)}",
            )


@dataclass
class LanguageModelingArguments:
    """How text becomes training examples for a causal language model, and the sample printed at the end.

    Args:
        block_size: tokens per training example or packed row (≥ 2: one token predicts the next).
        data_format: auto (detected from the columns), text, prompt_completion or messages (chat).
        packing: none (one padded example per row), blocks (concatenate and cut: raw text) or padding_free
            (whole examples packed in rows, attention kept within each). Unset: padding_free for
            prompt/completion and chat data, blocks for text. `true`/`false` (older configs) mean blocks/none.
        completion_only_loss: learn only the completions / assistant turns. Unset: on for prompt/completion and
            chat data.
        chat_template: a Jinja file, or a named template (`simple`, `chatml`) for a tokenizer without one.
    """

    block_size: int | None = field(
        default=None, metadata={"help": "Tokens per training example. Unset: min(1024, the model's context)."}
    )
    data_format: str = field(
        default="auto",
        metadata={
            "help": "auto, text, prompt_completion (columns prompt, completion) or messages (a column of "
            "[{role, content}] conversations). auto: messages if that column exists, prompt_completion if "
            "prompt/completion do, else text.",
            "choices": DATA_FORMATS,
        },
    )
    packing: str | None = field(
        default=None,
        metadata={
            "help": "none (one padded example per row), blocks (texts concatenated and cut into block_size rows; "
            "attention crosses examples: raw text) or padding_free (whole examples packed into rows of at most "
            "block_size, position ids restarting per example so attention never crosses them). Unset: "
            "padding_free for prompt/completion and chat data, blocks for text. true/false: blocks/none."
        },
    )
    completion_only_loss: bool | None = field(
        default=None,
        metadata={
            "help": "Mask prompts and system/user turns out of the labels (-100): learn completions and assistant "
            "turns only. Unset: true for prompt/completion and chat data."
        },
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "Chat template for messages data: a Jinja file, or 'simple' / 'chatml' (for a tokenizer "
            "without one, e.g. trained from scratch). Unset: the tokenizer's own."
        },
    )
    prompt: str = field(
        default="Once upon a time",
        metadata={"help": "Prompt of the sample generated at the end (chat data: the user turn)."},
    )
    max_new_tokens: int = field(default=40, metadata={"help": "Length of the generated sample."})

    def __post_init__(self):
        _require(
            self.block_size is None or (isinstance(self.block_size, int) and self.block_size >= 2),
            f"block_size must be ≥ 2 (a block needs a token to predict from and one to predict), got {self.block_size}",
        )
        _positive("max_new_tokens", self.max_new_tokens, allow_none=False, minimum=0)
        old = {True: "blocks", False: "none", "true": "blocks", "false": "none", "True": "blocks", "False": "none"}
        if self.packing in old:  # configs written before packing had three modes
            self.packing = old[self.packing]
        _require(
            self.packing in (None, "none", "blocks", "padding_free"),
            f"packing must be none, blocks or padding_free, got '{self.packing}'",
        )
        _choices(self)


@dataclass
class TranslationArguments:
    """Language pair, lengths and decoding of a translation model.

    Args:
        source_lang: source language key, e.g. "en" (mBART: "en_XX").
        target_lang: target language key, e.g. "de".
    """

    source_lang: str | None = field(default=None, metadata={"help": "Source language key, e.g. 'en' (mBART: en_XX)."})
    target_lang: str | None = field(default=None, metadata={"help": "Target language key, e.g. 'de' (mBART: de_DE)."})
    source_prefix: str | None = field(
        default=None, metadata={"help": "Text put before every source, e.g. 'translate English to German: ' (T5)."}
    )
    max_source_length: int = field(default=128, metadata={"help": "Truncate sources to this many tokens."})
    max_target_length: int = field(
        default=128, metadata={"help": "Truncate targets to this many tokens; also the generation limit."}
    )
    num_beams: int | None = field(
        default=None, metadata={"help": "Beams for generation in evaluation and prediction. Unset: the model's."}
    )

    def __post_init__(self):
        _positive("max_source_length", self.max_source_length, allow_none=False, minimum=2)
        _positive("max_target_length", self.max_target_length, allow_none=False, minimum=2)
        _positive("num_beams", self.num_beams)


@dataclass
class PeftArguments:
    """LoRA adapters through peft: train small low-rank matrices instead of the whole model.

    Args:
        use_peft: train LoRA adapters instead of all weights.
        lora_r: rank of the adapters.
    """

    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=8, metadata={"help": "Rank of the LoRA matrices."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (the update is alpha/r × BA)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names to adapt. Unset: peft's default for the architecture."}
    )
    merge_adapters: bool = field(
        default=False, metadata={"help": "Also save the model with the adapters merged in, under output_dir/merged."}
    )

    def __post_init__(self):
        _positive("lora_r", self.lora_r, allow_none=False)
        _require(self.lora_alpha > 0, f"lora_alpha must be > 0, got {self.lora_alpha}")
        _fraction("lora_dropout", self.lora_dropout)


# The training strategies hfopt adds to a Trainer, one dataclass per concern (each its own `--help` section);
# `StrategyArguments` holds them all for a recipe and for `apply_strategies`.


@dataclass
class EarlyStoppingArguments:
    """When to stop training before its epochs are done: on a plateau or a target of metric_for_best_model, or
    after a time budget."""

    _argument_group_name = "early stopping"

    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after N evaluations without improving metric_for_best_model."}
    )
    early_stopping_min_delta: float = field(
        default=0.0, metadata={"help": "Smallest change that counts as an improvement."}
    )
    early_stopping_relative: bool = field(
        default=False, metadata={"help": "early_stopping_min_delta is a fraction of the best value."}
    )
    early_stopping_target: float | None = field(
        default=None, metadata={"help": "Stop once metric_for_best_model reaches this value."}
    )
    max_train_time: float | None = field(default=None, metadata={"help": "Stop after this many seconds of training."})

    def __post_init__(self):
        _positive("early_stopping_patience", self.early_stopping_patience)
        _require(self.early_stopping_min_delta >= 0, "early_stopping_min_delta must be ≥ 0")
        _require(
            self.max_train_time is None or self.max_train_time > 0,
            f"max_train_time must be > 0 seconds, got {self.max_train_time}",
        )


@dataclass
class FreezingArguments:
    """Which weights train: frozen embeddings and bottom blocks, gradual unfreezing, layer-wise learning rates."""

    _argument_group_name = "freezing"

    freeze_embeddings: bool = field(default=False, metadata={"help": "Freeze the embeddings."})
    num_frozen_layers: int = field(default=0, metadata={"help": "Freeze the bottom N transformer blocks."})
    freeze_patterns: list[str] | None = field(
        default=None, metadata={"help": "Also freeze parameters whose name matches these regular expressions."}
    )
    unfreeze_every_n_steps: int | None = field(
        default=None, metadata={"help": "Gradual unfreezing: one more block (top-down) every N steps."}
    )
    unfreeze_every_n_epochs: int | None = field(
        default=None, metadata={"help": "Gradual unfreezing: one more block (top-down) every N epochs."}
    )
    layerwise_lr_decay: float | None = field(
        default=None, metadata={"help": "Multiply the learning rate by this factor per block, from the top down."}
    )

    def __post_init__(self):
        _positive("num_frozen_layers", self.num_frozen_layers, allow_none=False, minimum=0)
        _positive("unfreeze_every_n_steps", self.unfreeze_every_n_steps)
        _positive("unfreeze_every_n_epochs", self.unfreeze_every_n_epochs)
        _require(
            not (self.unfreeze_every_n_steps and self.unfreeze_every_n_epochs),
            "give unfreeze_every_n_steps or unfreeze_every_n_epochs, not both",
        )
        _require(
            self.layerwise_lr_decay is None or 0 < self.layerwise_lr_decay <= 1,
            f"layerwise_lr_decay must be in (0, 1], got {self.layerwise_lr_decay}",
        )


@dataclass
class ScheduleArguments:
    """hfopt's learning-rate schedules beside transformers' own (those go in --lr_scheduler_type)."""

    _argument_group_name = "learning-rate schedule"

    lr_schedule: str | None = field(
        default=None,
        metadata={
            "help": "hfopt schedule instead of lr_scheduler_type: decay by lr_decay_gamma every step "
            "(exponential) or every lr_decay_step_size steps (step).",
            "choices": LR_SCHEDULES,
        },
    )
    lr_decay_gamma: float = field(
        default=0.5, metadata={"help": "Decay factor: per step (exponential) or per step_size steps (step)."}
    )
    lr_decay_step_size: int = field(default=100, metadata={"help": "Steps between drops of the 'step' schedule."})

    def __post_init__(self):
        _choices(self)
        _require(0 < self.lr_decay_gamma <= 1, f"lr_decay_gamma must be in (0, 1], got {self.lr_decay_gamma}")
        _positive("lr_decay_step_size", self.lr_decay_step_size, allow_none=False)


@dataclass
class RegularizationArguments:
    """Regularization beyond weight decay and dropout: an L1 penalty and noise in the training text."""

    _argument_group_name = "regularization"

    l1_lambda: float = field(default=0.0, metadata={"help": "L1 penalty λ·Σ|w| on weight matrices."})
    augment_deletion_prob: float = field(default=0.0, metadata={"help": "Training text: delete each token with p."})
    augment_swap_prob: float = field(default=0.0, metadata={"help": "Training text: swap neighbours with p."})
    augment_mask_prob: float = field(default=0.0, metadata={"help": "Training text: mask each token with p."})

    def __post_init__(self):
        _require(self.l1_lambda >= 0, f"l1_lambda must be ≥ 0, got {self.l1_lambda}")
        for name in ("augment_deletion_prob", "augment_swap_prob", "augment_mask_prob"):
            _fraction(name, getattr(self, name))


@dataclass
class MonitoringArguments:
    """What watches training as it runs: the loss watchdog and the throughput log."""

    _argument_group_name = "monitoring"

    watchdog: str | None = field(
        default=None,
        metadata={"help": "On NaN/Inf or spiking loss: 'stop' training or 'skip' the update.", "choices": WATCHDOG},
    )
    watchdog_spike_factor: float | None = field(
        default=None, metadata={"help": "A loss above this × the running median counts as a spike."}
    )
    log_throughput: bool = field(
        default=False, metadata={"help": "Log samples/s, tokens/s, MFU and peak memory at every logging step."}
    )
    peak_flops: float | None = field(default=None, metadata={"help": "Peak FLOP/s of one device, for the MFU."})

    def __post_init__(self):
        _choices(self)
        _require(
            self.watchdog_spike_factor is None or self.watchdog_spike_factor > 1,
            f"watchdog_spike_factor must be > 1, got {self.watchdog_spike_factor}",
        )
        _require(self.peak_flops is None or self.peak_flops > 0, "peak_flops must be > 0")


@dataclass
class BatchingArguments:
    """How training rows become batches: random, grouped by length, or by a token budget; and a batch-size ramp."""

    _argument_group_name = "batching"

    batching: str = field(
        default="samples",
        metadata={
            "help": "'samples': random batches of per_device_train_batch_size rows; 'length': batches of that "
            "size of rows of similar length (little padding; resumes exactly); 'tokens': rows of similar length "
            "grouped into batches of at most max_tokens_per_batch padded tokens.",
            "choices": BATCHING,
        },
    )
    max_tokens_per_batch: int | None = field(
        default=None, metadata={"help": "Token budget of a batch (rows × longest row) with --batching tokens."}
    )
    batch_size_warmup_steps: int = field(
        default=0, metadata={"help": "Ramp the batch size up from one row over the first N optimizer steps."}
    )

    def __post_init__(self):
        _choices(self)
        _require(
            (self.batching == "tokens") == (self.max_tokens_per_batch is not None),
            "--batching tokens goes with --max_tokens_per_batch N (and N only with --batching tokens)",
        )
        _positive("max_tokens_per_batch", self.max_tokens_per_batch, minimum=2)
        _positive("batch_size_warmup_steps", self.batch_size_warmup_steps, allow_none=False, minimum=0)


def _check_storage(value: str) -> None:
    """A search storage's file must be one whose folder exists (database URLs are opened where the search starts)."""
    if "://" in value and not value.startswith("sqlite"):
        return
    path = value.split(":///", 1)[1] if value.startswith("sqlite") and ":///" in value else value
    if value.startswith("sqlite") and (":///" not in value or not path):
        raise InputError(f"hp_search_storage {value}: a sqlite URL names its file, as sqlite:///path/to/search.db")
    if Path(path).is_dir():
        raise InputError(f"hp_search_storage {value} is a folder: name a file in it (search.log, or sqlite:///...db)")
    if not Path(path).expanduser().resolve().parent.is_dir():
        raise InputError(f"hp_search_storage {value}: its folder {Path(path).parent} does not exist")


@dataclass
class SearchArguments:
    """An optuna hyperparameter search in place of one training (`hfopt.study.search_hyperparameters`)."""

    _argument_group_name = "hyperparameter search"

    hp_search_trials: int = field(
        default=0, metadata={"help": "Run an optuna hyperparameter search of N trials instead of one training."}
    )
    hp_search_objective: str | None = field(
        default=None,
        metadata={"help": "Eval metric the search optimises, e.g. eval_accuracy. Unset: the recipe's main metric."},
    )
    hp_search_direction: str | None = field(
        default=None,
        metadata={
            "help": "Unset: minimize losses and perplexity, else maximize.",
            "choices": ("maximize", "minimize"),
        },
    )
    hp_search_space: dict | str | None = field(
        default=None,
        metadata={
            "help": "The search space as JSON (or a YAML mapping): {name: {type: float|int|categorical, low, high, "
            "log, choices}}, names being TrainingArguments fields. Unset: learning rate, warmup, weight decay, "
            "batch size."
        },
    )
    hp_search_storage: str | None = field(
        default=None,
        metadata={
            "help": "Where the search's trials live, shared by every worker that names it: a journal file (a path, "
            "on a filesystem all workers see), sqlite:///FILE.db, or a database URL. The workers' trials add up to "
            "--hp_search_trials, each run once. Unset: in memory, one process.",
        },
    )
    hp_search_study_name: str | None = field(
        default=None,
        metadata={"help": "The search's name in --hp_search_storage (workers of one search share it). Default: hfopt"},
    )

    def __post_init__(self):
        _choices(self)
        _positive("hp_search_trials", self.hp_search_trials, allow_none=False, minimum=0)
        _require(
            self.hp_search_study_name is None or self.hp_search_storage is not None,
            "--hp_search_study_name goes with --hp_search_storage",
        )
        if self.hp_search_storage is not None:
            _check_storage(self.hp_search_storage)
        if isinstance(self.hp_search_space, str):
            try:
                self.hp_search_space = json.loads(self.hp_search_space)
            except json.JSONDecodeError as err:
                raise InputError(f"hp_search_space is not valid JSON: {err}") from None
        for name in ("hp_search_objective", "hp_search_direction", "hp_search_space", "hp_search_storage"):
            _require(
                getattr(self, name) is None or self.hp_search_trials > 0,
                f"--{name} goes with --hp_search_trials N (the search is off)",
            )


class ArgumentGroup:
    """Several argument dataclasses that a recipe takes, and a Trainer reads, as one object.

    `parse_args` parses each of `PARTS` as its own dataclass (its own section of `--help`) and hands the recipe
    the group; reading or setting a field goes to the part that owns it. In Python, build one from keywords,
    each checked by the part that owns it::

        StrategyArguments(early_stopping_patience=3, batching="length").batching  # 'length'

    It is not itself a dataclass: use `.replace(...)` and `.to_dict()` where you used `dataclasses.replace` and
    `asdict`, and `argument_dataclasses(...)` to hand it to an `HfArgumentParser` of your own.
    """

    PARTS: tuple[type, ...] = ()

    def __init__(self, *parts, **values):
        if parts:
            if values or len(parts) != len(self.PARTS) or not all(map(isinstance, parts, self.PARTS)):
                raise TypeError(f"{type(self).__name__} takes its parts ({', '.join(c.__name__ for c in self.PARTS)})")
        else:
            owners = self.owners()
            for key in values:
                if key not in owners:
                    hint = difflib.get_close_matches(key, list(owners), n=1)
                    suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                    raise TypeError(f"{type(self).__name__} has no field '{key}'{suggestion}")
            parts = tuple(cls(**{k: v for k, v in values.items() if owners[k] is cls}) for cls in self.PARTS)
        object.__setattr__(self, "parts", tuple(parts))

    @classmethod
    def owners(cls) -> dict[str, type]:
        """Each field name and the part that owns it."""
        return {f.name: part for part in cls.PARTS for f in dataclasses.fields(part)}

    def _owner(self, name: str):
        for part in self.__dict__.get("parts", ()):
            if name in part.__dataclass_fields__:
                return part
        raise AttributeError(f"{type(self).__name__} has no field '{name}'")

    def __getattr__(self, name: str):  # only for names not found on the group itself: the fields
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._owner(name), name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._owner(name), name, value)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.parts == self.parts

    def __copy__(self):
        return type(self)(*(copy.copy(part) for part in self.parts))

    def replace(self, **changes):
        """A copy with `changes` applied, each checked by the part that owns it (as `dataclasses.replace`)."""
        owners = self.owners()
        unknown = sorted(set(changes) - set(owners))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field '{unknown[0]}'")
        return type(self)(
            *(
                dataclasses.replace(part, **{k: v for k, v in changes.items() if owners[k] is type(part)})
                for part in self.parts
            )
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field and its value (as `dataclasses.asdict` on the parts)."""
        return {k: v for part in self.parts for k, v in dataclasses.asdict(part).items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.parts))})"


class StrategyArguments(ArgumentGroup):
    """The training strategies hfopt adds to a Trainer (see `hfopt.callbacks.apply_strategies`), each off by
    default, by concern: early stopping, freezing, schedules, regularization, monitoring, batching and the
    hyperparameter search."""

    PARTS = (
        EarlyStoppingArguments,
        FreezingArguments,
        ScheduleArguments,
        RegularizationArguments,
        MonitoringArguments,
        BatchingArguments,
        SearchArguments,
    )


def argument_dataclasses(types: Iterable[type]) -> list[type]:
    """The dataclasses behind a recipe's `ARGUMENTS`, argument groups replaced by their parts (what
    `HfArgumentParser` takes)."""
    return [part for t in types for part in (t.PARTS if issubclass(t, ArgumentGroup) else (t,))]


def argument_objects(objects: Iterable[Any]) -> list[Any]:
    """Parsed arguments, argument groups replaced by their parts: every object a dataclass."""
    return [part for obj in objects for part in (obj.parts if isinstance(obj, ArgumentGroup) else (obj,))]


@dataclass
class CompressionArguments:
    """Compression applied while training (not after): gradual magnitude pruning, quantization-aware training,
    and weight sharing (blocks merged before training, then trained shared).

    Args:
        gradual_pruning_sparsity: the fraction of linear weights zeroed by the end of pruning.
        qat: "int8": train with fake-quantized int8 weights and activations; the int8 model goes to output_dir/int8.
        share_layers: merge the transformer blocks into this many groups sharing one set of weights.
    """

    gradual_pruning_sparsity: float | None = field(
        default=None,
        metadata={"help": "Prune linear weights to this sparsity during training (cubic schedule, Zhu & Gupta)."},
    )
    gradual_pruning_start_step: int = field(default=0, metadata={"help": "Step at which gradual pruning starts."})
    gradual_pruning_end_step: int | None = field(
        default=None, metadata={"help": "Step at which the target sparsity is reached. Unset: 3/4 of training."}
    )
    gradual_pruning_frequency: int = field(default=10, metadata={"help": "Prune every N steps."})
    qat: str | None = field(
        default=None,
        metadata={
            "help": "Quantization-aware training: 'int8' trains with the int8 weights and activations of "
            "dynamic int8 simulated, and also saves the int8 model under output_dir/int8.",
            "choices": ("int8",),
        },
    )
    share_layers: int | None = field(
        default=None,
        metadata={
            "help": "Before training, merge the transformer blocks into N groups of adjacent, similar blocks "
            "that share one set of weights (BERT-family encoders, GPT-2)."
        },
    )
    share_layers_init: str = field(
        default="average",
        metadata={
            "help": "Weights of a shared group: the members' 'average' or the 'central' member.",
            "choices": ("average", "central"),
        },
    )

    def __post_init__(self):
        if self.gradual_pruning_sparsity is not None:
            _fraction("gradual_pruning_sparsity", self.gradual_pruning_sparsity)
        _choices(self)
        _positive("share_layers", self.share_layers)

        _positive("gradual_pruning_start_step", self.gradual_pruning_start_step, allow_none=False, minimum=0)
        _positive("gradual_pruning_frequency", self.gradual_pruning_frequency, allow_none=False)
        _require(
            self.gradual_pruning_end_step is None or self.gradual_pruning_end_step > self.gradual_pruning_start_step,
            "gradual_pruning_end_step must be after gradual_pruning_start_step",
        )


@dataclass
class RunArguments:
    """How the run relates to earlier ones in the same output_dir, and what it evaluates besides training.

    Args:
        start_fresh: train from step 0 even though output_dir holds checkpoints or a finished run.
        eval_before_training: also evaluate the model before training (`eval_before_*` metrics).
        metric: an `evaluate` metric (name or script path) computed on top of the recipe's built-in ones.
        keep_checkpoints: keep the checkpoint-* folders (optimizer state included) once the run has finished.
        verbose: also show the third-party warnings hfopt drops as known to be harmless (`hfopt.quiet`).
    """

    start_fresh: bool = field(
        default=False,
        metadata={"help": "Train from step 0, replacing the checkpoints and record of an earlier run in output_dir."},
    )
    eval_before_training: bool = field(
        default=False, metadata={"help": "Also evaluate the model before training (metrics prefixed eval_before_)."}
    )
    measure_latency: bool = field(
        default=False,
        metadata={
            "help": "After training, measure the model's CPU inference latency at batch 1 and 16 on the "
            "validation texts (latency_b*_ms in the results)."
        },
    )
    metric: str | None = field(
        default=None,
        metadata={
            "help": "An evaluate metric computed in every evaluation besides the built-in ones: a name "
            "(from the hub or evaluate's cache) or the path of a metric script."
        },
    )
    keep_checkpoints: bool = field(
        default=True,
        metadata={
            "help": "Keep the checkpoint-* folders (each holds the optimizer state: about 3× the model) once the "
            "run has finished; false deletes them after the final model is saved (a rerun still finds the run "
            "complete; only resuming a stopped run needs them)."
        },
    )
    verbose: bool = field(
        default=False,
        metadata={"help": "Show every third-party warning, including those hfopt drops as known to be harmless."},
    )


# TrainingArguments defaults every recipe shares (each recipe adds its own learning rate, epochs, batches):
# train and evaluate, evaluate and checkpoint every epoch keeping two, log every 10 steps to the console only,
# and bring callback states (early stopping, ...) back on resume.
RECIPE_DEFAULTS = dict(
    do_train=True,
    do_eval=True,
    weight_decay=0.01,
    eval_strategy="epoch",
    save_strategy="epoch",
    save_total_limit=2,
    logging_steps=10,
    report_to="none",
    restore_callback_states_from_checkpoint=True,
)


class _Parser(HfArgumentParser):
    """HfArgumentParser whose errors raise InputError instead of printing usage and exiting."""

    def error(self, message: str):  # argparse API
        raise InputError(message)


DATA_SOURCE_KEYS = ("dataset_name", "train_file", "validation_file")
# where a refusal of the user's arguments comes from when it is not hfopt's own InputError (TrainingArguments'
# checks, enum values); the same error type raised anywhere else is a bug and keeps its traceback
ARGUMENT_LIBRARIES = ("transformers", "accelerate", "peft", "enum", "argparse")
MODEL_SOURCE_KEYS = ("model_name_or_path", "config_name", "model_type")


def parse_args(
    dataclass_types: Iterable[type],
    recipe: str,
    argv: list[str] | None = None,
    defaults: dict[str, Any] | None = None,
    demo: dict[str, Any] | None = None,
) -> tuple:
    """Parse recipe defaults, then `--config FILE.yaml`, then command-line flags into the given dataclasses.

    Returns one instance per dataclass type, in order, followed by the resolved configuration (the dict that
    `config.yaml` records; see `resolved_config`). `output_dir` defaults to `outputs/<recipe>`; the launch's
    defaults (`hfopt.hardware.launch_defaults`: DeepSpeed's backend and precision) come next to the recipe's.
    Parsing changes nothing in the process: `recipe_main` adapts it to the launch before (`adapt_to_launch`).
    `demo` holds the recipe's offline demo: its values become defaults when the YAML and flags name no data
    (and, if the demo names a model, no model either); anything given still wins over them.

    Example::

        model_args, data_args, training_args, config = parse_args(
            (ModelArguments, DataArguments, TrainingArguments), recipe="finetune_bert", argv=["--num_train_epochs", "1"]
        )
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parsed = _parse(list(dataclass_types), recipe, argv, defaults)
    if demo:
        objects = parsed[:-1]
        given = {k for obj in objects for k in DATA_SOURCE_KEYS + MODEL_SOURCE_KEYS if getattr(obj, k, None)}
        needs_model = any(k in demo for k in MODEL_SOURCE_KEYS)
        if not given & set(DATA_SOURCE_KEYS) and not (needs_model and given & set(MODEL_SOURCE_KEYS)):
            parsed = _parse(list(dataclass_types), recipe, argv, {**(defaults or {}), **demo})
    return parsed


def _parse(dataclass_types: list[type], recipe: str, argv: list[str], defaults: dict[str, Any] | None) -> tuple:
    parser = _Parser(argument_dataclasses(dataclass_types))
    known = {action.dest: action for action in parser._actions if action.dest != "help"}

    config_path, argv = _pop_config_flag(argv)
    yaml_values = read_yaml_config(config_path, known) if config_path else {}

    pending = pending_launch_changes()
    if pending:
        raise InputError(
            f"this process is one of {os.environ.get('WORLD_SIZE')} launched without a GPU and is not adapted to it "
            f"({'; '.join(pending)}): call hfopt.hardware.adapt_to_launch() before parsing (recipes do it through "
            "recipe_main), or every process trains alone"
        )
    launch = {k: v for k, v in launch_defaults().items() if k in known}
    merged_defaults = {"output_dir": os.path.join("outputs", recipe), **launch, **(defaults or {})}
    unknown = sorted(set(merged_defaults) - set(known))
    if unknown:
        raise ValueError(f"recipe default(s) {', '.join(unknown)} are not arguments of this recipe")
    parser.set_defaults(**merged_defaults)

    if yaml_values:
        try:
            parser.parse_args(to_flags(yaml_values))  # type errors of the YAML alone name its file
        except InputError as err:
            raise InputError(f"{config_path}: {err}") from None
    try:
        *outputs, remaining = parser.parse_args_into_dataclasses(
            args=to_flags(yaml_values) + argv, return_remaining_strings=True
        )
    except InputError:
        raise
    except (ValueError, TypeError) as err:  # __post_init__ checks of TrainingArguments and others
        if not raised_in(err, *ARGUMENT_LIBRARIES):
            raise  # an error of hfopt's own code is a bug: its traceback stays
        raise InputError(str(err).strip().splitlines()[0]) from None
    if remaining:
        flag = next((tok for tok in remaining if tok.startswith("-")), remaining[0])
        hint = difflib.get_close_matches(flag.lstrip("-").split("=")[0], list(known), n=1)
        suggestion = f" (did you mean '--{hint[0]}'?)" if hint else ""
        raise InputError(f"unknown argument {flag}{suggestion}")

    _check_together(outputs)
    explicit = set(merged_defaults) | set(yaml_values) | _flags_in(argv, known)
    return (*_grouped(dataclass_types, outputs), resolved_config(outputs, keys=explicit))


def _grouped(dataclass_types: list[type], outputs: list) -> list:
    """The parsed dataclasses with each argument group's parts put back into the group."""
    parts, grouped = iter(outputs), []
    for t in dataclass_types:
        if issubclass(t, ArgumentGroup):
            grouped.append(t(*(next(parts) for _ in t.PARTS)))
        else:
            grouped.append(next(parts))
    return grouped


def reject_unsupported(arguments, unsupported: dict[str, str], recipe: str) -> None:
    """Make the flags a recipe accepts (through a shared dataclass) but cannot honour an error when they are given:
    `unsupported` maps each such flag to the reason. A flag counts as given when its value is not its default.

    Example::

        reject_unsupported(arguments, {"num_labels": "a language model has no classes"}, "finetune_gpt")
    """
    for obj in argument_objects(arguments):
        for f in dataclasses.fields(obj):
            if f.name not in unsupported:
                continue
            default = (
                f.default
                if f.default is not dataclasses.MISSING
                else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            )
            if getattr(obj, f.name) != default:
                raise InputError(f"{recipe} does not take --{f.name}: {unsupported[f.name]}")


def _check_together(outputs: list) -> None:
    """The checks that span TrainingArguments and hfopt's dataclasses, and those of TrainingArguments values
    transformers accepts but that cannot train."""
    training = next((o for o in outputs if hasattr(o, "output_dir") and hasattr(o, "learning_rate")), None)
    if training is None:
        return
    check_precision(training)
    _check_packages(training, outputs)
    _require(
        math.isfinite(training.learning_rate) and training.learning_rate > 0,
        f"learning_rate must be > 0, got {training.learning_rate}",
    )
    _require(
        training.max_steps > 0 or (math.isfinite(training.num_train_epochs) and training.num_train_epochs > 0),
        f"num_train_epochs must be > 0 (or max_steps set), got {training.num_train_epochs}",
    )
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        _positive(name, getattr(training, name), allow_none=False)
    _positive("save_total_limit", training.save_total_limit)
    _require(training.max_grad_norm is None or training.max_grad_norm >= 0, "max_grad_norm must be ≥ 0")
    stopping = next((o for o in outputs if isinstance(o, EarlyStoppingArguments)), None)
    if stopping is not None and (
        stopping.early_stopping_patience is not None or stopping.early_stopping_target is not None
    ):
        _require(
            training.metric_for_best_model is not None
            and str(training.eval_strategy) not in ("no", "IntervalStrategy.NO"),
            "early stopping on a metric needs --metric_for_best_model and an --eval_strategy",
        )


# report_to value -> the modules its tracker needs (any one of a tuple), as pip names them
TRACKER_PACKAGES: dict[str, tuple[str, ...]] = {
    "azure_ml": ("azureml",),
    "clearml": ("clearml",),
    "codecarbon": ("codecarbon",),
    "comet_ml": ("comet_ml",),
    "dagshub": ("dagshub",),
    "dvclive": ("dvclive",),
    "flyte": ("flytekit",),
    "mlflow": ("mlflow",),
    "neptune": ("neptune",),
    "swanlab": ("swanlab",),
    "tensorboard": ("tensorboard", "tensorboardX"),
    "trackio": ("trackio",),
    "wandb": ("wandb",),
}
PIP_NAMES = {"galore_torch": "galore-torch", "lomo_optim": "lomo-optim", "torch_optimi": "torch-optimi"}


def _optimizer_packages(optim: str) -> list[str]:
    """The modules an --optim value needs beyond torch (bitsandbytes for the 8-bit, paged and bnb ones, ...)."""
    needs = {
        "galore_torch": optim.startswith("galore"),
        "apollo_torch": optim.startswith("apollo"),
        "lomo_optim": optim in ("lomo", "adalomo"),
        "grokadamw": optim == "grokadamw",
        "schedulefree": optim.startswith("schedule_free"),
        "torch_optimi": optim == "stable_adamw",
        "torchdistx": optim == "adamw_anyprecision",
        "torchao": optim in ("adamw_torch_4bit", "adamw_torch_8bit"),
        "torch_xla": optim == "adamw_torch_xla",
        "torch_npu": optim == "adamw_torch_npu_fused",
        "bitsandbytes": "bnb" in optim
        or optim.startswith(("paged_", "lion_", "ademamix"))
        or optim in ("adamw_8bit", "galore_adamw_8bit", "galore_adamw_8bit_layerwise"),
    }
    return [module for module, needed in needs.items() if needed]


def _check_packages(training, outputs: list) -> None:
    """A flag whose optional package is missing fails here, naming the flag and the package, not at Trainer set-up
    or the first step: trackers of --report_to, --optim's optimizer library, --use_peft, --hp_search_trials."""
    import importlib.util

    def installed(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False

    def need(flag: str, modules: tuple[str, ...] | list[str]) -> None:
        for module in modules:
            if not installed(module):
                pip = PIP_NAMES.get(module, module)
                raise InputError(f"{flag} needs the package '{pip}', which is not installed: pip install {pip}")

    report_to = training.report_to if isinstance(training.report_to, list) else [training.report_to]
    for tracker in (str(t) for t in report_to if t is not None):
        if tracker in ("all", "none"):
            continue
        if tracker not in TRACKER_PACKAGES:
            raise InputError(f"report_to '{tracker}' is not one of {', '.join(['none', 'all', *TRACKER_PACKAGES])}")
        modules = TRACKER_PACKAGES[tracker]
        if not any(installed(m) for m in modules):
            need(f"--report_to {tracker}", modules[:1])
    optim = getattr(training.optim, "value", str(training.optim))
    need(f"--optim {optim}", _optimizer_packages(optim))
    if getattr(training, "use_liger_kernel", False):
        need("--use_liger_kernel", ["liger_kernel"])
    for output in outputs:
        if getattr(output, "use_peft", False):
            need("--use_peft", ["peft"])
        if (getattr(output, "hp_search_trials", 0) or 0) > 0:
            need("--hp_search_trials", ["optuna"])


def resolved_config(dataclass_objects: Iterable[Any], keys: set[str]) -> dict[str, Any]:
    """The flat `{key: value}` of a run's arguments, ready for YAML: every field of the recipe's own dataclasses
    (and of TrainingArguments subclasses beyond TrainingArguments), and the TrainingArguments fields that the
    recipe, the YAML or the command line set (the rest are transformers'
    defaults, recorded in full in run_info.json). Feeding it back as `--config` reproduces the run's arguments.
    """
    from transformers import TrainingArguments

    transformers_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    config: dict[str, Any] = {}
    for obj in argument_objects(dataclass_objects):
        for f in dataclasses.fields(obj):
            if f.init and (f.name not in transformers_fields or f.name in keys):
                value = getattr(obj, f.name)
                config[f.name] = "<redacted>" if f.name.endswith("token") and value else _plain(value)
    return dict(sorted(config.items()))


def _pop_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    ns, rest = pre.parse_known_args(argv)
    return ns.config, rest


def read_yaml_config(path: str, known) -> dict[str, Any]:
    """The mapping of a YAML config file, each key one of `known` (an unknown key is an InputError with a
    did-you-mean); a missing file, invalid YAML, a repeated key or a non-mapping is one InputError too.

    Example::

        values = read_yaml_config("recipes/pipelines/sst2_chain.yaml", {"eval_file", "quantize"})
    """
    if not os.path.isfile(path):
        raise InputError(f"config file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as fh:
            values = load_yaml(fh, f"config file {path}") or {}
    except yaml.YAMLError as err:
        raise InputError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise InputError(f"config file {path} must be a mapping of key: value, got {type(values).__name__}")
    for key in values:
        if key not in known:
            hint = difflib.get_close_matches(str(key), list(known), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise InputError(f"unknown key '{key}' in config file {path}{suggestion}")
    return values


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's SafeLoader, except that a key given twice in one mapping is an error (yaml keeps the last)."""

    source = "YAML"

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            places: dict[Any, tuple[int, int]] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` overrides on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                place = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                try:
                    earlier = places.setdefault(key, place)
                except TypeError:  # an unhashable key: yaml reports it
                    continue
                if earlier != place:  # the same place: one key node met again (merged keys), not a repeat
                    where = (
                        f"lines {earlier[0]} and {place[0]}"
                        if earlier[0] != place[0]
                        else f"line {place[0]}, columns {earlier[1]} and {place[1]}"
                    )
                    raise InputError(f"{self.source}: key '{key}' is given twice ({where}); keep one")
        return super().construct_mapping(node, deep=deep)


def load_yaml(stream, source: str) -> Any:
    """`yaml.safe_load`, except that a key given twice in a mapping is an InputError naming source, the key and
    both lines (plain yaml silently keeps the last value). Syntax errors stay `yaml.YAMLError`.

    Example::

        with open(path, encoding="utf-8") as fh:
            values = load_yaml(fh, f"config file {path}")
    """
    loader = _UniqueKeyLoader(stream)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def to_flags(values: dict[str, Any]) -> list[str]:
    """Command-line tokens for a mapping of arguments (YAML values, a study's variant): lists become several
    values, mappings JSON, None is left out. argparse then applies the same types to YAML and flags.

    Example::

        to_flags({"learning_rate": 3e-5, "text_column_names": ["a", "b"]})
        # ['--learning_rate', '3e-05', '--text_column_names', 'a', 'b']
    """
    tokens: list[str] = []
    for key, value in values.items():
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        if isinstance(value, (list, tuple)):
            tokens += [f"--{key}", *(str(v) for v in value)]
        elif isinstance(value, dict):
            tokens += [f"--{key}", json.dumps(value)]
        else:
            tokens += [f"--{key}", str(value)]
    return tokens


def _flags_in(argv: list[str], known: dict[str, argparse.Action]) -> set[str]:
    names = {tok[2:].split("=", 1)[0] for tok in argv if tok.startswith("--")}
    return {name for name in names if name in known}


def _plain(value: Any) -> Any:
    """A YAML-safe copy of a value: enums as their value, tuples as lists, unknown objects as strings."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
