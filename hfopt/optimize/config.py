"""What `hfopt optimize` searches for and where: the data, the accuracy budget, the objective, the time, and the
search space (`SearchSpace`, one list of choices per compression setting), all checked before any work.

Example::

    config = OptimizeConfig(train_file="train.tsv", eval_file="dev.tsv", max_drop=0.01, objective="latency_b16",
                            max_trials=40, space={"student_layers": [None, 3], "quantize": ["none", "dynamic_int8"]})
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..compression.onnx import ONNX_STAGES
from ..errors import InputError
from ..pipeline import CompressionConfig
from ..pipeline.config import AUGMENTATION, AUGMENTING, DISTILLING_SETTINGS, check_augment_stages

__all__ = ["OBJECTIVES", "OptimizeConfig", "SearchSpace", "parse_duration", "student_blocks"]

OBJECTIVES = ("latency_b1", "latency_b16", "size", "pareto")
QUANTIZE_CHOICES = ("none", "dynamic_int8", "dynamic_int8_embeddings", "int8_weight_only", "qat", "fp16", "bf16")
BACKEND_CHOICES = ("pytorch", *ONNX_STAGES)
# The pipeline keys the search sets itself (from the space, or the data files): not in `pipeline:`.
SEARCHED = ("student_layers", "prune_vocabulary", "prune_heads", "prune_ffn", "prune_magnitude", "recover",
            "recover_epochs", "qat", "quantize", "quantize_embeddings", "onnx", "backend", "importance_file",
            "eval_file", "train_file", "stages", "compare", "calibration_file", "stage_cache")  # fmt: skip


def student_choice(value: Any) -> int | str | None:
    """A `student_layers` choice of the space as the search keeps it: null (no student), a block count N (N evenly
    spaced blocks), or the teacher's blocks (0-based, two or more) as one text, [0, 2, 5] → "0,2,5" (a trial's
    draw is a number or a text)."""
    if value is None or (type(value) is int and value >= 1):
        return value
    parts = value.split(",") if isinstance(value, str) else value
    whole = isinstance(parts, (list, tuple)) and all(
        type(b) is int or (isinstance(b, str) and b.strip().isdigit()) for b in parts
    )
    blocks = [int(b) for b in parts] if whole else None
    if blocks is None or len(blocks) < 2 or len(set(blocks)) < len(blocks) or min(blocks) < 0:
        raise InputError(f"space: student_layers takes block counts ≥ 1, lists of two or more distinct teacher "
                         f"blocks (0-based, e.g. [0, 2, 5]) or null, got {value!r}")  # fmt: skip
    return ",".join(str(b) for b in blocks)


def student_blocks(choice: int | str | None) -> list[int] | None:
    """A trial's `student_layers` draw as `CompressionConfig.student_layers`: 3 → [3] (three evenly spaced blocks),
    "0,2,5" → [0, 2, 5] (those blocks), null → None."""
    if choice is None:
        return None
    return [choice] if isinstance(choice, int) else [int(b) for b in choice.split(",")]


def _distinct_students(choices: list, num_layers: int) -> list:
    """`choices` with each list of blocks that is what its count makes by default (blocks 0, 2, 4 of six: 3)
    written as the count, and repeats dropped: one student is never distilled twice under two names."""
    from ..distillation import even_blocks

    def as_count(choice):
        blocks = student_blocks(choice) or []
        return len(blocks) if len(blocks) > 1 and blocks == even_blocks(len(blocks), num_layers) else choice

    return list(dict.fromkeys(as_count(choice) for choice in choices))


def shared_settings(pipeline: dict) -> dict:
    """`pipeline:` for a `CompressionConfig` without a training stage: its `teacher` and `hidden_loss_weight`
    are for the trials that distil, its `augment_*` for those that train."""
    return {k: v for k, v in pipeline.items() if k not in DISTILLING_SETTINGS + AUGMENTING}


def _help(text: str, choices: tuple | None = None) -> dict:
    return {"help": text, **({"choices": choices} if choices else {})}


@dataclass
class SearchSpace:
    """The choices of each compression setting a trial draws from (YAML `space:`); unset: the task's defaults
    (`defaults`). A trial's draws become one `CompressionConfig`."""

    student_layers: list | None = field(
        default=None,
        metadata=_help("students to try: block counts (evenly spaced blocks), lists of the teacher's blocks "
                       "(0-based) or null (no student), e.g. [null, 3, [0, 2, 5]]"),
    )  # fmt: skip
    prune_vocabulary: list | None = field(
        default=None, metadata=_help("classification: [false, true] to try keeping only the training data's tokens")
    )
    prune_heads: list | None = field(default=None, metadata=_help("fractions of attention heads to remove"))
    prune_ffn: list | None = field(default=None, metadata=_help("fractions of feed-forward neurons to remove"))
    prune_magnitude: list | None = field(default=None, metadata=_help("fractions of linear weights to zero"))
    recover: list | None = field(default=None, metadata=_help("recovery after pruning: none, finetune, distill"))
    recover_epochs: list | None = field(default=None, metadata=_help("epochs of the recovery stage"))
    quantize: list | None = field(
        default=None,
        metadata=_help("number formats: none, dynamic_int8, dynamic_int8_embeddings, int8_weight_only, qat "
                       "(quantization-aware training, distilled), fp16, bf16"),
    )  # fmt: skip
    backend: list | None = field(
        default=None, metadata=_help("runtimes: pytorch, onnx (fp32), onnx_int8 (dynamic), onnx_int8_static")
    )

    def __post_init__(self):
        if isinstance(self.student_layers, (list, tuple)):  # lists of blocks become texts: hashable, one draw each
            self.student_layers = [student_choice(v) for v in self.student_layers]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if not isinstance(value, (list, tuple)) or not value:
                raise InputError(f"space: {f.name} takes a non-empty list of choices, got {value!r}")
            setattr(self, f.name, list(dict.fromkeys(value)))  # in order, once each
        for name, allowed in (("quantize", QUANTIZE_CHOICES), ("backend", BACKEND_CHOICES),
                              ("recover", ("none", "finetune", "distill"))):  # fmt: skip
            for value in getattr(self, name) or ():
                if value not in allowed:
                    hint = difflib.get_close_matches(str(value), allowed, n=1)
                    raise InputError(f"space: {name} '{value}' is not one of {', '.join(allowed)}"
                                     + (f" (did you mean '{hint[0]}'?)" if hint else ""))  # fmt: skip
        for name in ("prune_heads", "prune_ffn", "prune_magnitude"):
            for value in getattr(self, name) or ():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                    raise InputError(f"space: {name} takes fractions in [0, 1), got {value!r}")
        for value in self.prune_vocabulary or ():
            if not isinstance(value, bool):
                raise InputError(f"space: prune_vocabulary takes true/false, got {value!r}")
        for value in self.recover_epochs or ():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InputError(f"space: recover_epochs takes numbers > 0, got {value!r}")

    @classmethod
    def from_dict(cls, values: dict | None) -> SearchSpace:
        values = values or {}
        if not isinstance(values, dict):
            raise InputError(f"space takes a mapping of setting: [choices], got {values!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                raise InputError(f"space: unknown setting '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                                 + f"; the space has {', '.join(known)}")  # fmt: skip
        return cls(**values)

    def resolved(self, task: str, num_layers: int, onnx: bool) -> dict[str, list]:
        """Every setting's choices for a model of `task` with `num_layers` blocks: the stated ones, checked
        against what the task can do, else the defaults. `onnx`: whether ONNX Runtime is installed."""
        defaults = {
            "student_layers": [None] + sorted({max(1, num_layers // 2), max(1, num_layers // 3)} - {num_layers},
                                              reverse=True) if task != "seq2seq" else [None],
            "prune_vocabulary": [False, True] if task == "classification" else [False],
            "prune_heads": [0.0, 0.25, 0.5],
            "prune_ffn": [0.0, 0.25, 0.5],
            "prune_magnitude": [0.0],
            "recover": ["none", "finetune", "distill"],
            "recover_epochs": [1.0],
            "quantize": ["none", "dynamic_int8", "dynamic_int8_embeddings", "int8_weight_only", "qat"],
            "backend": (["pytorch", "onnx_int8"] + (["onnx_int8_static"] if task != "seq2seq" else []))
            if onnx else ["pytorch"],
        }  # fmt: skip
        space = {name: getattr(self, name) if getattr(self, name) is not None else defaults[name] for name in defaults}
        for value in space["student_layers"]:
            if value is not None and task == "seq2seq":
                raise InputError("space: student_layers makes students of single-stack models, not seq2seq")
            blocks = student_blocks(value) or []
            count, shown = (blocks[0], value) if len(blocks) == 1 else (len(blocks), blocks)
            if value is not None and count >= num_layers:
                raise InputError(f"space: student_layers {shown} is not fewer than the model's {num_layers} blocks")
            if len(blocks) > 1 and max(blocks) >= num_layers:
                raise InputError(f"space: student_layers {shown} names block {max(blocks)}; the model's blocks are "
                                 f"0 to {num_layers - 1}")  # fmt: skip
        space["student_layers"] = _distinct_students(space["student_layers"], num_layers)
        if True in space["prune_vocabulary"] and task != "classification":
            raise InputError(f"space: prune_vocabulary is for classification models; this one is {task}")
        if "onnx_int8_static" in space["backend"] and task == "seq2seq":
            raise InputError("space: backend onnx_int8_static is for classification and causal_lm models")
        if not onnx and any(b != "pytorch" for b in space["backend"]):
            from ..compression.onnx import require_onnx

            require_onnx()  # the one line that says what to install
        return space


@dataclass
class OptimizeConfig:
    """The search of `hfopt optimize`: its data, budget, goal, limits and space. Build it from keywords (a YAML
    file's or the flags'); it is checked on creation, before any model is loaded."""

    train_file: str | None = field(
        default=None, metadata=_help("training data (students, recovery, importance scores, the vocabulary)")
    )
    selection_file: str | None = field(
        default=None,
        metadata=_help("the data the search decides on (the eval file's format); default: a split of train_file"),
    )
    selection_fraction: float = field(
        default=0.1, metadata=_help("without selection_file: the share of train_file held out to select on")
    )
    eval_file: str | None = field(
        default=None, metadata=_help("the data of the final report, which the search never sees")
    )
    max_drop: float | None = field(
        default=None,
        metadata=_help("the budget: the most the headline metric may lose, absolute (0.01: one accuracy point)"),
    )
    max_relative_drop: float | None = field(
        default=None, metadata=_help("the budget as a fraction of the original's metric (0.03: perplexity +3%)")
    )
    objective: str = field(
        default="latency_b16",
        metadata=_help("what to minimise within the budget; pareto: all three, the chosen model the best "
                       "geometric mean of speed-ups and size reduction", OBJECTIVES),
    )  # fmt: skip
    time_budget: str | None = field(
        default=None, metadata=_help("start no trial after this long, nor one whose training would outlast it: 90m")
    )
    max_trials: int | None = field(default=None, metadata=_help("stop after this many trials"))
    screen_fraction: float = field(
        default=0.25,
        metadata=_help("score each trial on this share of the selection data first and stop it there when it is "
                       "clearly outside the budget (0: off)"),
    )  # fmt: skip
    threads: int | None = field(default=None, metadata=_help("CPU threads of the deployment (latency is timed so)"))
    space: dict[str, Any] = field(default_factory=dict, metadata=_help("YAML only: the search space (SearchSpace)"))
    pipeline: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help("YAML only: pipeline settings every trial shares (student_epochs, batch_size, "
                       "max_train_samples, latency_repeats, text_column_names, ...)"),
    )  # fmt: skip

    def __post_init__(self):
        if self.max_drop is None and self.max_relative_drop is None:
            raise InputError("give a budget: max_drop (absolute) or max_relative_drop (a fraction)")
        if self.max_drop is not None and self.max_relative_drop is not None:
            raise InputError("give one budget: max_drop or max_relative_drop, not both")
        for name in ("max_drop", "max_relative_drop"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):  # fmt: skip
                raise InputError(f"{name} must be a number ≥ 0, got {value!r}")
        if self.objective not in OBJECTIVES:
            hint = difflib.get_close_matches(str(self.objective), OBJECTIVES, n=1)
            raise InputError(f"objective '{self.objective}' is not one of {', '.join(OBJECTIVES)}"
                             + (f" (did you mean '{hint[0]}'?)" if hint else ""))  # fmt: skip
        if self.time_budget is None and self.max_trials is None:
            raise InputError("give the search a limit: time_budget (e.g. 90m) and/or max_trials")
        self.seconds = parse_duration(self.time_budget) if self.time_budget is not None else None
        if self.max_trials is not None and (isinstance(self.max_trials, bool) or self.max_trials < 1):
            raise InputError(f"max_trials must be ≥ 1, got {self.max_trials}")
        if not 0 < self.selection_fraction < 1:
            raise InputError(f"selection_fraction must be in (0, 1), got {self.selection_fraction}")
        if not 0 <= self.screen_fraction < 1:
            raise InputError(f"screen_fraction must be in [0, 1), got {self.screen_fraction}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be ≥ 1, got {self.threads}")
        for name in ("train_file", "eval_file"):
            if getattr(self, name) is None:
                raise InputError(f"optimize needs {name}")
        for name in ("train_file", "selection_file", "eval_file"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise InputError(f"{name} {value} does not exist")
        self._check_apart()
        self.search_space = SearchSpace.from_dict(self.space)
        self._check_pipeline()

    def _check_apart(self) -> None:
        """The eval file is data the search never sees: not the selection file, not the training file; and the
        selection file is not the training file (no trial is chosen on rows it trained on)."""
        from ..pipeline.fingerprint import source_fingerprint

        def same(a: str, b: str) -> bool:
            return Path(a).resolve() == Path(b).resolve() or source_fingerprint(a) == source_fingerprint(b)

        for name in ("selection_file", "train_file"):
            other = getattr(self, name)
            if other is not None and same(other, self.eval_file):
                raise InputError(
                    f"eval_file {self.eval_file} is the {name} ({other}): the final report must be made on data the "
                    "search never saw; give another eval_file"
                )
        if self.selection_file is not None and same(self.selection_file, self.train_file):
            raise InputError(
                f"selection_file {self.selection_file} is the train_file: the search would decide on rows its "
                "students and recovery trained on; give other rows, or leave selection_file out to hold out "
                "selection_fraction of train_file"
            )

    def _check_pipeline(self) -> None:
        if not isinstance(self.pipeline, dict):
            raise InputError(f"pipeline takes a mapping of pipeline settings, got {self.pipeline!r}")
        known = [k for k in CompressionConfig.owners() if k not in SEARCHED]
        for key in self.pipeline:
            if key in SEARCHED:
                raise InputError(f"pipeline: {key} is what the search sets (in space:, or the data files)")
            if key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise InputError(f"pipeline: unknown setting '{key}'{suggestion}")
        CompressionConfig(**shared_settings(self.pipeline))  # each value checked as the pipeline checks it
        if any(self.pipeline.get(k) is not None for k in DISTILLING_SETTINGS + AUGMENTING):  # with a stage using them
            stages = self.pipeline.get("augment_stages")
            check_augment_stages(stages, any(self.pipeline.get(k) for k in AUGMENTATION))
            values = {k: v for k, v in self.pipeline.items() if k != "augment_stages"}  # the trials set their own
            CompressionConfig(**values, student_layers=[1], train_file=self.train_file)

    @property
    def budget(self) -> tuple[float, bool]:
        """(the budget, whether it is relative to the original's metric)."""
        relative = self.max_relative_drop is not None
        return (self.max_relative_drop if relative else self.max_drop), relative


def parse_duration(text: str | int | float) -> float:
    """Seconds of "90m", "1h30m", "45s", "2h" or a plain number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        text = str(text).strip()
        plain = re.fullmatch(r"\d+(?:\.\d+)?", text)  # a number alone: seconds
        match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?", text)
        if plain:
            match = re.fullmatch(r"()()(.+)", text)
        if not match or not any(match.groups()):
            raise InputError(f"time_budget '{text}' is not a duration: use e.g. 90m, 1h30m, 45s or seconds")
        hours, minutes, seconds_part = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + seconds_part
    if not seconds > 0:
        raise InputError(f"time_budget must be longer than 0, got '{text}'")
    return seconds
