"""Argument dataclasses shared by the recipes and the YAML + command-line parser built on HfArgumentParser.

Precedence, lowest first: the recipe's own defaults, then the YAML given with `--config`, then flags on the
command line. A flag is the dataclass field is the YAML key.

Example::

    model_args, data_args, run_args, training_args = parse_args(
        (ModelArguments, DataArguments, RunArguments, TrainingArguments),
        recipe="finetune_bert",
        argv=["--config", "recipes/configs/bert.yaml", "--learning_rate", "3e-5"],
    )
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml
from transformers import HfArgumentParser

from .errors import InputError


@dataclass
class ModelArguments:
    """Which pretrained model and tokenizer to start from, and how to load them."""

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
        metadata={"help": "Train from scratch with this architecture's default config (e.g. gpt2, marian), "
                  "when neither model_name_or_path nor config_name is given."},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Comma-separated config changes for training from scratch, e.g. 'n_layer=4,n_embd=256'."},
    )
    dropout: float | None = field(
        default=None,
        metadata={"help": "Set every dropout probability of the model's config (hidden_dropout_prob, "
                  "attention_probs_dropout_prob, resid_pdrop, dropout, ...). For one of them: config_overrides."},
    )
    tokenizer_vocab_size: int = field(
        default=2000,
        metadata={"help": "Vocabulary size of the tokenizer trained on the training data when no tokenizer is given."},
    )


@dataclass
class DataArguments:
    """Where the data comes from, which columns to use and how much of it."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id, e.g. 'nyu-mll/glue'."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset config, e.g. 'sst2'."})
    train_file: str | None = field(default=None, metadata={"help": "Local training file (csv, tsv, json, jsonl)."})
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


@dataclass
class LanguageModelingArguments:
    """How text becomes training examples for a causal language model, and the sample printed at the end."""

    block_size: int | None = field(
        default=None, metadata={"help": "Tokens per training example. Unset: min(1024, the model's context)."}
    )
    packing: bool = field(
        default=True,
        metadata={"help": "Concatenate texts and cut them into block_size blocks. False: one padded example per "
                  "text (chat/instruction data), padding masked out of the loss."},
    )
    prompt: str = field(default="Once upon a time", metadata={"help": "Prompt of the sample generated at the end."})
    max_new_tokens: int = field(default=40, metadata={"help": "Length of the generated sample."})


@dataclass
class TranslationArguments:
    """Language pair, lengths and decoding of a translation model."""

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


@dataclass
class PeftArguments:
    """LoRA adapters through peft: train small low-rank matrices instead of the whole model."""

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


@dataclass
class StrategyArguments:
    """The training strategies hfopt adds to a Trainer (see hfopt.strategies); each is off by default."""

    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after N evaluations without improving metric_for_best_model."})
    early_stopping_min_delta: float = field(
        default=0.0, metadata={"help": "Smallest change that counts as an improvement."})
    early_stopping_relative: bool = field(
        default=False, metadata={"help": "early_stopping_min_delta is a fraction of the best value."})
    early_stopping_target: float | None = field(
        default=None, metadata={"help": "Stop once metric_for_best_model reaches this value."})
    max_train_time: float | None = field(default=None, metadata={"help": "Stop after this many seconds of training."})
    freeze_embeddings: bool = field(default=False, metadata={"help": "Freeze the embeddings."})
    num_frozen_layers: int = field(default=0, metadata={"help": "Freeze the bottom N transformer blocks."})
    freeze_patterns: list[str] | None = field(
        default=None, metadata={"help": "Also freeze parameters whose name matches these regular expressions."})
    unfreeze_every_n_steps: int | None = field(
        default=None, metadata={"help": "Gradual unfreezing: one more block (top-down) every N steps."})
    unfreeze_every_n_epochs: int | None = field(
        default=None, metadata={"help": "Gradual unfreezing: one more block (top-down) every N epochs."})
    layerwise_lr_decay: float | None = field(
        default=None, metadata={"help": "Multiply the learning rate by this factor per block, from the top down."})
    l1_lambda: float = field(default=0.0, metadata={"help": "L1 penalty λ·Σ|w| on weight matrices."})
    lr_schedule: str | None = field(
        default=None, metadata={"help": "hfopt schedule instead of lr_scheduler_type: 'exponential' or 'step'."})
    lr_decay_gamma: float = field(
        default=0.5, metadata={"help": "Decay factor: per step (exponential) or per step_size steps (step)."})
    lr_decay_step_size: int = field(default=100, metadata={"help": "Steps between drops of the 'step' schedule."})
    watchdog: str | None = field(
        default=None, metadata={"help": "On NaN/Inf or spiking loss: 'stop' training or 'skip' the update."})
    watchdog_spike_factor: float | None = field(
        default=None, metadata={"help": "A loss above this × the running median counts as a spike."})
    log_throughput: bool = field(
        default=False, metadata={"help": "Log samples/s, tokens/s, MFU and peak memory at every logging step."})
    peak_flops: float | None = field(default=None, metadata={"help": "Peak FLOP/s of one device, for the MFU."})
    augment_deletion_prob: float = field(default=0.0, metadata={"help": "Training text: delete each token with p."})
    augment_swap_prob: float = field(default=0.0, metadata={"help": "Training text: swap neighbours with p."})
    augment_mask_prob: float = field(default=0.0, metadata={"help": "Training text: mask each token with p."})
    hp_search_trials: int = field(
        default=0, metadata={"help": "Run an optuna hyperparameter search of N trials instead of one training."})


@dataclass
class RunArguments:
    """How this run relates to earlier ones in the same output_dir."""

    start_fresh: bool = field(
        default=False,
        metadata={"help": "Delete checkpoints left in output_dir and train from step 0 instead of resuming."},
    )
    eval_before_training: bool = field(
        default=False, metadata={"help": "Also evaluate the model before training (metrics prefixed eval_before_)."}
    )


CONFIG_FILE_NAME = "config.yaml"

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

    def error(self, message: str):  # noqa: D102 (argparse API)
        raise InputError(message)


DATA_SOURCE_KEYS = ("dataset_name", "train_file", "validation_file")
MODEL_SOURCE_KEYS = ("model_name_or_path", "config_name", "model_type")


def parse_args(
    dataclass_types: Iterable[type],
    recipe: str,
    argv: list[str] | None = None,
    defaults: dict[str, Any] | None = None,
    demo: dict[str, Any] | None = None,
) -> tuple:
    """Parse recipe defaults, then `--config FILE.yaml`, then command-line flags into the given dataclasses.

    Returns one instance per dataclass type, in order. `output_dir` defaults to `outputs/<recipe>`. The merged
    configuration is kept on the returned TrainingArguments-like object as `hfopt_config` (see `resolved_config`).
    `demo` holds the recipe's offline demo: its values become defaults when the YAML and flags name no data
    (and, if the demo names a model, no model either); anything given still wins over them.

    Example::

        model_args, data_args, training_args = parse_args(
            (ModelArguments, DataArguments, TrainingArguments), recipe="finetune_bert", argv=["--num_train_epochs", "1"]
        )
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parsed = _parse(list(dataclass_types), recipe, argv, defaults)
    if demo:
        given = {k for obj in parsed for k in DATA_SOURCE_KEYS + MODEL_SOURCE_KEYS if getattr(obj, k, None)}
        needs_model = any(k in demo for k in MODEL_SOURCE_KEYS)
        if not given & set(DATA_SOURCE_KEYS) and not (needs_model and given & set(MODEL_SOURCE_KEYS)):
            parsed = _parse(list(dataclass_types), recipe, argv, {**(defaults or {}), **demo})
    return parsed


def _parse(dataclass_types: list[type], recipe: str, argv: list[str], defaults: dict[str, Any] | None) -> tuple:
    _use_gloo_without_accelerator()
    parser = _Parser(dataclass_types)
    known = {action.dest: action for action in parser._actions if action.dest != "help"}

    config_path, argv = _pop_config_flag(argv)
    yaml_values = _read_yaml(config_path, known) if config_path else {}

    merged_defaults = {"output_dir": os.path.join("outputs", recipe), **(defaults or {})}
    unknown = sorted(set(merged_defaults) - set(known))
    if unknown:
        raise InputError(f"recipe default(s) {', '.join(unknown)} are not arguments of this recipe")
    parser.set_defaults(**merged_defaults)

    if yaml_values:
        try:
            parser.parse_args(_to_flags(yaml_values, known))  # type errors of the YAML alone name its file
        except InputError as err:
            raise InputError(f"{config_path}: {err}") from None
    try:
        *outputs, remaining = parser.parse_args_into_dataclasses(
            args=_to_flags(yaml_values, known) + argv, return_remaining_strings=True
        )
    except InputError:
        raise
    except (ValueError, TypeError) as err:  # __post_init__ checks of TrainingArguments and others
        raise InputError(str(err).strip().splitlines()[0]) from None
    if remaining:
        flag = next((tok for tok in remaining if tok.startswith("-")), remaining[0])
        hint = difflib.get_close_matches(flag.lstrip("-").split("=")[0], list(known), n=1)
        suggestion = f" (did you mean '--{hint[0]}'?)" if hint else ""
        raise InputError(f"unknown argument {flag}{suggestion}")

    for obj in outputs:
        if hasattr(obj, "mixed_precision"):
            check_precision(obj)
    explicit = set(merged_defaults) | set(yaml_values) | _flags_in(argv, known)
    config = resolved_config(outputs, keys=explicit)
    for obj in outputs:
        if hasattr(obj, "output_dir"):
            obj.hfopt_config = config
    return tuple(outputs)


def check_precision(training_args) -> None:
    """fp16 needs a CUDA (or ROCm) GPU; without one, fail instead of training in a precision that isn't there."""
    import torch

    fp16 = training_args.fp16 or getattr(training_args, "mixed_precision", "no") == "fp16"
    if fp16 and not torch.cuda.is_available():
        raise InputError("fp16 mixed precision needs a CUDA GPU and this machine has none: drop --fp16 "
                         "(or the fp16 accelerate config) and train in fp32")


def resolved_config(dataclass_objects: Iterable[Any], keys: set[str]) -> dict[str, Any]:
    """The flat `{key: value}` of a run's arguments, ready for YAML: every field of hfopt's own dataclasses, and
    the TrainingArguments fields that the recipe, the YAML or the command line set (the rest are transformers'
    defaults, recorded in full in run_info.json). Feeding it back as `--config` reproduces the run's arguments.
    """
    config: dict[str, Any] = {}
    for obj in dataclass_objects:
        ours = type(obj).__module__ == __name__
        for f in dataclasses.fields(obj):
            if f.init and (ours or f.name in keys):
                value = getattr(obj, f.name)
                config[f.name] = "<redacted>" if f.name.endswith("token") and value else _plain(value)
    return dict(sorted(config.items()))


def save_config(config: dict[str, Any], output_dir: str | os.PathLike) -> Path:
    """Write the resolved configuration as `config.yaml` in output_dir (atomically) and return its path."""
    from .run import write_text_atomic

    path = Path(output_dir) / CONFIG_FILE_NAME
    header = "# Resolved configuration of this run; rerun it with: --config " + str(path) + "\n"
    write_text_atomic(path, header + yaml.safe_dump(config, sort_keys=True))
    return path


def _use_gloo_without_accelerator() -> None:
    """Make a multi-process launch on a machine without GPUs real CPU data parallelism (gloo).

    accelerate only picks its MULTI_CPU mode when told the run is on CPU; with a GPU config such as
    accelerate_configs/multi_gpu.yaml on a CPU-only machine every process would otherwise train alone.
    """
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"


def _pop_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    ns, rest = pre.parse_known_args(argv)
    return ns.config, rest


def _read_yaml(path: str, known: dict[str, argparse.Action]) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise InputError(f"config file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as fh:
            values = yaml.safe_load(fh) or {}
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


def _to_flags(values: dict[str, Any], known: dict[str, argparse.Action]) -> list[str]:
    """Turn YAML values into command-line tokens so that argparse applies the same types to both."""
    tokens: list[str] = []
    for key, value in values.items():
        option = known[key].option_strings[0] if known[key].option_strings else f"--{key}"
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            if not value:
                continue
            tokens += [option, *(str(v) for v in value)]
        elif isinstance(value, dict):
            tokens += [option, json.dumps(value)]
        else:
            tokens += [option, str(value)]
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
