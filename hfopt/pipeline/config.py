"""`CompressionConfig`: what a compression pipeline does, stage by stage, checked before any work.

Example::

    config = CompressionConfig(eval_file="dev.tsv", train_file="train.tsv", student_layers=[3],
                               prune_heads=0.4, recover="distill", quantize="dynamic_int8")
    config.stage_names()   # ['student', 'prune_heads', 'recover', 'quantize']
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..args import ArgumentGroup
from ..compression.onnx import ONNX_STAGES
from ..compression.pruning import check_amount
from ..compression.quantization import METHODS
from ..compression.sharing import INITS
from ..compression.tasks import TASKS as TASK_NAMES
from ..errors import InputError

__all__ = [
    "ORDER",
    "AugmentationSettings",
    "CompressionConfig",
    "DeploymentStages",
    "ReportSettings",
    "ScoringData",
    "StructureStages",
    "TrainingSettings",
    "TrainingStages",
    "load_config_file",
    "onnx_stage_names",
]

# Every stage the pipeline has, in the one order it runs them. Structure first (a student, fewer tokens, shared
# or fewer blocks), then training that recovers what structure cost, then the magnitude zeros (which training
# would refill), then the number formats, then the runtime.
ORDER = (
    "student",
    "prune_vocabulary",
    "share_layers",
    "prune_heads",
    "prune_ffn",
    "recover",
    "prune_magnitude",
    "qat",
    "quantize",
    "onnx",
)
TRAINING_STAGES = ("student", "recover", "qat")
TRAINING_EPOCHS = {"student": "student_epochs", "recover": "recover_epochs", "qat": "qat_epochs"}  # the setting
DISTILLING_SETTINGS = ("teacher", "hidden_loss_weight")  # refused without a stage that distils
AUGMENTATION = ("augment_deletion_prob", "augment_swap_prob", "augment_mask_prob")  # of the training stages' rows
AUGMENTING = (*AUGMENTATION, "augment_stages")  # the settings only a training stage takes
RECOVERY = ("none", "distill", "finetune")
TASKS = ("auto", *TASK_NAMES)
BACKENDS = ("pytorch", "onnxruntime")

# Why a stage cannot come before another (the declared order's reasons, for a `stages:` list that breaks it).
_WHY_AFTER = {
    ("student", "*"): "a student is made from the original's blocks, before anything else changes them",
    ("recover", "prune_magnitude"): "recovery training would refill the zeroed weights",
    ("qat", "prune_magnitude"): "quantization-aware training would refill the zeroed weights",
    ("quantize", "*"): "pruning, sharing and training need float weights",
    ("qat", "quantize"): "quantization-aware training ends in int8 already",
    ("onnx", "*"): "ONNX stages are exported from the last PyTorch model",
}


def check_hidden_states(hidden_loss_weight: float, task: str) -> None:
    """Hidden states are matched block to block: single-stack models only."""
    if hidden_loss_weight and task == "seq2seq":
        raise InputError("hidden_loss_weight matches the blocks of single-stack models (BERT, GPT-2); a seq2seq "
                         "model distils its logits only")  # fmt: skip


def distils(student_layers, recover, qat) -> bool:
    """Whether these stage settings learn from a teacher (a student, recover: distill, qat: distill)."""
    return bool(student_layers) or "distill" in (recover, qat)


def trains(student_layers, recover, qat) -> bool:
    """Whether these stage settings train a model (a student, a recovery, QAT): what `augment_*` changes."""
    return bool(student_layers) or (recover or "none") != "none" or (qat or "none") != "none"


def without_idle_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Pipeline keywords less the settings none of their stages would take (`CompressionConfig` refuses them):
    `teacher` and `hidden_loss_weight` without a stage that distils; `augment_stages` cut to the stages set, and
    `augment_*` without a stage that trains (or without one of those it names)."""
    values = dict(values)
    training = [s for s in TRAINING_STAGES if (values.get(_setting(s)) or "none") != "none"]
    if values.get("augment_stages") is not None:
        values["augment_stages"] = [s for s in values["augment_stages"] if s in training]
    augmenting = bool(training) and values.get("augment_stages") != []
    stages = (values.get("student_layers"), values.get("recover"), values.get("qat"))
    idle = (() if distils(*stages) else DISTILLING_SETTINGS) + (() if augmenting else AUGMENTING)
    return {k: v for k, v in values.items() if k not in idle}


def check_augment_stages(stages, augmenting: bool) -> None:
    """`augment_stages`: None, or a list of training stages, given with some `augment_*` (`augmenting`)."""
    if stages is None:
        return
    if isinstance(stages, str) or not isinstance(stages, (list, tuple)):
        raise InputError(f"augment_stages takes a list of training stages, got {stages!r}")
    for stage in stages:
        if stage not in TRAINING_STAGES:
            raise InputError(f"augment_stages: {stage!r} is not a training stage; they are "
                             f"{', '.join(TRAINING_STAGES)}")  # fmt: skip
    if not stages or len(set(stages)) < len(stages):
        raise InputError(f"augment_stages takes distinct training stages ({', '.join(TRAINING_STAGES)}), got "
                         f"{list(stages)}; leave it out to augment every one")  # fmt: skip
    if not augmenting:
        raise InputError("augment_stages goes with augment_deletion_prob, augment_swap_prob or augment_mask_prob")


def _help(text: str, choices: tuple | None = None) -> dict:
    return {"help": text, **({"choices": choices} if choices else {})}


class _Checked:
    """A part of `CompressionConfig`: on creation, each field's type and choices, then the part's own checks."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check_type(f, getattr(self, f.name))
        self._check_values()

    def _check_values(self) -> None:
        pass


def _check_type(f: dataclasses.Field, value) -> None:
    choices = f.metadata.get("choices")
    if choices and value is not None and value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1)
        raise InputError(
            f"{f.name}: '{value}' is not one of {', '.join(choices)}"
            + (f" (did you mean '{hint[0]}'?)" if hint else "")
        )
    kind = str(f.type)
    if value is None or kind.startswith("str") and isinstance(value, str):
        return
    if kind.startswith("list") and not isinstance(value, (list, tuple)):
        if f.name == "student_layers" and isinstance(value, int) and not isinstance(value, bool):
            return
        raise InputError(f"{f.name} takes a list, got {value!r}")
    if kind.startswith(("int", "float")) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise InputError(f"{f.name} takes a number, got {value!r}")
    if kind.startswith("int") and isinstance(value, float) and not value.is_integer():
        raise InputError(f"{f.name} takes a whole number, got {value!r}")
    if kind == "bool" and not isinstance(value, bool):
        raise InputError(f"{f.name} takes true or false, got {value!r}")


def _at_least_one(part, *names: str) -> None:
    for name in names:
        value = getattr(part, name)
        if value is not None and value < 1:
            raise InputError(f"{name} must be ≥ 1, got {value}")


def _positive(part, *names: str) -> None:
    for name in names:
        value = getattr(part, name)
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"{name} must be a finite number > 0, got {value}")


@dataclass
class ScoringData(_Checked):
    """The data every stage is scored on."""

    _argument_group_name = "scoring data"

    eval_file: str | None = field(
        default=None,
        metadata=_help(
            "classification: csv/tsv/json(l)/parquet with text and label columns; causal_lm: txt or json(l) text; "
            "seq2seq: json(l) translation pairs or one column per language. Every stage's report row is scored here."
        ),
    )
    task: str = field(default="auto", metadata=_help("auto: from the model's architecture", TASKS))
    tokenizer_name: str | None = field(default=None, metadata=_help("the tokenizer, if the model folder has none"))
    text_column_names: list[str] | None = field(default=None, metadata=_help("text column(s) of the data files"))
    label_column_name: str | None = field(default=None, metadata=_help("label column of classification files"))
    source_lang: str | None = field(default=None, metadata=_help("seq2seq: source language key or column"))
    target_lang: str | None = field(default=None, metadata=_help("seq2seq: target language key or column"))
    data_format: str = field(
        default="auto",
        metadata=_help("causal_lm: text, prompt_completion or messages (chat) rows; auto: from the columns",
                       ("auto", "text", "prompt_completion", "messages")),
    )  # fmt: skip
    chat_template: str | None = field(
        default=None,
        metadata=_help("causal_lm chat data: a Jinja file or a named template (simple, chatml) for a tokenizer "
                       "without one"),
    )  # fmt: skip
    max_eval_samples: int | None = field(default=None, metadata=_help("use only the first N eval rows"))

    def _check_values(self) -> None:
        _at_least_one(self, "max_eval_samples")


@dataclass
class StructureStages(_Checked):
    """The structure stages: a student, fewer tokens, shared blocks, fewer heads and neurons, zeros."""

    _argument_group_name = "structure stages"

    student_layers: list[int] | None = field(
        default=None,
        metadata=_help(
            "distil into a student made from the original's blocks: one number N (N evenly spaced blocks, as "
            "distill_bert.py) or the 0-based block indices to keep (two or more numbers); needs train_file"
        ),
    )
    student_epochs: float = field(default=3.0, metadata=_help("epochs of the student's distillation"))
    student_learning_rate: float = field(default=1e-4, metadata=_help("learning rate of the student stage"))
    prune_vocabulary: str | None = field(
        default=None,
        metadata=_help(
            "classification: keep only the embedding rows of the tokens FILE's texts use (the training file, in "
            "the eval file's format); other tokens embed as the unknown token"
        ),
    )
    share_layers: int | None = field(
        default=None,
        metadata=_help("merge the blocks into N groups of adjacent, similar blocks sharing one set of weights"),
    )
    share_layers_init: str = field(default="average", metadata=_help("a shared group's weights", INITS))
    prune_heads: float | None = field(default=None, metadata=_help("fraction of attention heads to remove"))
    prune_ffn: float | None = field(default=None, metadata=_help("fraction of feed-forward neurons to remove"))
    importance_file: str | None = field(
        default=None,
        metadata=_help(
            "labelled examples (the eval file's format) that score heads and neurons for prune_heads / prune_ffn; "
            "default: the eval file (use training data to keep the eval data out of the choice)"
        ),
    )
    prune_magnitude: float | None = field(default=None, metadata=_help("fraction of linear weights to zero"))

    def _check_values(self) -> None:
        if isinstance(self.student_layers, int):
            self.student_layers = [self.student_layers]
        for name in ("prune_heads", "prune_ffn", "prune_magnitude"):
            if getattr(self, name) is not None:
                check_amount(getattr(self, name), name)
        _at_least_one(self, "share_layers")
        _positive(self, "student_epochs", "student_learning_rate")
        layers = self.student_layers
        if layers is not None:
            if not layers or any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
                raise InputError(f"student_layers takes N or block indices, got {layers!r}")
            if len(layers) == 1 and layers[0] < 1:
                raise InputError(f"student_layers: a student needs ≥ 1 block, got {layers[0]}")
            if len(layers) > 1 and (min(layers) < 0 or len(set(layers)) < len(layers)):
                raise InputError(f"student_layers {layers}: distinct 0-based block indices")
        if self.share_layers and (self.prune_heads or self.prune_ffn):
            raise InputError("share_layers does not combine with prune_heads / prune_ffn (blocks of one shape)")
        if self.importance_file and not (self.prune_heads or self.prune_ffn):
            raise InputError("importance_file goes with prune_heads / prune_ffn")


@dataclass
class TrainingStages(_Checked):
    """The training that recovers what structure cost, and quantization-aware training."""

    _argument_group_name = "recovery and QAT"

    recover: str = field(
        default="none",
        metadata=_help(
            "train the pruned model on train_file: distill (from the original model) or finetune (on the labels)",
            RECOVERY,
        ),
    )
    recover_epochs: float = field(default=1.0, metadata=_help("epochs of the recovery stage"))
    recover_learning_rate: float = field(default=5e-5, metadata=_help("learning rate of the recovery stage"))
    qat: str = field(
        default="none",
        metadata=_help(
            "quantization-aware training into int8 on train_file: distill (from the original) or finetune", RECOVERY
        ),
    )
    qat_epochs: float = field(default=1.0, metadata=_help("epochs of quantization-aware training"))
    qat_learning_rate: float = field(default=2e-5, metadata=_help("learning rate of quantization-aware training"))

    def _check_values(self) -> None:
        _positive(self, "recover_epochs", "recover_learning_rate", "qat_epochs", "qat_learning_rate")


@dataclass
class TrainingSettings(_Checked):
    """How the training stages (student, recover, qat) train."""

    _argument_group_name = "training stages"

    train_file: str | None = field(
        default=None,
        metadata=_help("training data (the eval file's format) for the student, recovery and QAT stages"),
    )
    max_train_samples: int | None = field(
        default=None, metadata=_help("use only the first N rows of train_file in the training stages")
    )
    teacher: str | None = field(
        default=None,
        metadata=_help("the model the distill objectives learn from (a folder with the same tokenizer); default: the "
                       "original model"),
    )  # fmt: skip
    batch_size: int = field(default=32, metadata=_help("training batch size of the training stages"))
    seed: int = field(default=42, metadata=_help("seed of the training stages"))
    alpha: float = field(default=0.5, metadata=_help("distillation: weight of the hard-label loss"))
    temperature: float = field(default=2.0, metadata=_help("distillation: softmax temperature"))
    hidden_loss_weight: float = field(
        default=0.0,
        metadata=_help("distillation: weight of the MSE between the student's and the teacher's hidden states "
                       "(student blocks matched to evenly spaced teacher blocks); 0: the logits only"),
    )  # fmt: skip
    save_steps: int = field(
        default=200, metadata=_help("a training stage keeps a checkpoint every N steps: a killed run resumes there")
    )
    stage_cache: str | None = field(
        default=None,
        metadata=_help("a folder of trained stages to reuse, such as an `hfopt optimize` output's stages/: a student, "
                       "recovery or QAT stage found there with the same fingerprint (the same model, data and "
                       "settings before it) is copied instead of trained"),
    )  # fmt: skip

    def _check_values(self) -> None:
        _at_least_one(self, "max_train_samples", "batch_size", "save_steps")
        _positive(self, "temperature")
        if not (math.isfinite(self.hidden_loss_weight) and self.hidden_loss_weight >= 0):
            raise InputError(f"hidden_loss_weight must be a finite number ≥ 0, got {self.hidden_loss_weight}")
        if not 0 <= self.alpha <= 1:
            raise InputError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.stage_cache is not None and not Path(self.stage_cache).is_dir():
            raise InputError(f"stage_cache: {self.stage_cache} is not a folder")


@dataclass
class AugmentationSettings(_Checked):
    """How the training stages change their rows (token deletion, swaps, masks)."""

    _argument_group_name = "augmentation"

    augment_deletion_prob: float = field(
        default=0.0, metadata=_help("training stages: delete each token of a training row with this probability")
    )
    augment_swap_prob: float = field(
        default=0.0, metadata=_help("training stages: swap each token with its neighbour with this probability")
    )
    augment_mask_prob: float = field(
        default=0.0,
        metadata=_help("training stages: replace each token by the mask token with this probability (a new variant "
                       "each time a row is read; a distilling stage's teacher sees the same variant)"),
    )  # fmt: skip
    augment_stages: list[str] | None = field(
        default=None,
        metadata=_help("the training stages whose rows augment_* changes (student, recover, qat); default: every "
                       "one that is set"),
    )  # fmt: skip

    def _check_values(self) -> None:
        for name in AUGMENTATION:
            if not 0 <= getattr(self, name) < 1:
                raise InputError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        check_augment_stages(self.augment_stages, any(getattr(self, name) for name in AUGMENTATION))


@dataclass
class DeploymentStages(_Checked):
    """The number formats and the runtime."""

    _argument_group_name = "quantization and runtime"

    quantize: str | None = field(default=None, metadata=_help("quantize after training", METHODS))
    quantize_embeddings: bool = field(default=False, metadata=_help("int8 embedding tables (dynamic_int8)"))
    onnx: list[str] | None = field(
        default=None,
        metadata=_help(
            "also export the last float stage to ONNX Runtime: onnx (fp32, fused), onnx_int8 (dynamic), "
            "onnx_int8_static (calibrated); an empty list: all that the task supports (needs the onnx extra)"
        ),
    )
    backend: str = field(
        default="pytorch",
        metadata=_help("onnxruntime: also every ONNX Runtime stage the task supports (as an empty onnx)", BACKENDS),
    )
    calibration_file: str | None = field(
        default=None, metadata=_help("inputs for onnx_int8_static's calibration (default: the eval_file)")
    )
    calibration_samples: int | None = field(
        default=None, metadata=_help("rows of the calibration file to use (default 128)")
    )

    def _check_values(self) -> None:
        _at_least_one(self, "calibration_samples")
        if self.backend == "onnxruntime" and self.onnx is None:
            self.onnx = []  # every stage the task supports
        for name in self.onnx or []:
            if name not in ONNX_STAGES:
                raise InputError(f"onnx: unknown stage '{name}': choose from {', '.join(ONNX_STAGES)}")
        static = self.onnx is not None and (not self.onnx or "onnx_int8_static" in self.onnx)
        for name in ("calibration_file", "calibration_samples"):
            if getattr(self, name) is not None and not static:
                raise InputError(f"--{name} goes with --onnx onnx_int8_static")


@dataclass
class ReportSettings(_Checked):
    """The report, and the stages' order when stated."""

    _argument_group_name = "report"

    latency_repeats: int = field(default=20, metadata=_help("timed repeats per stage and batch size"))
    max_new_tokens: int = field(default=16, metadata=_help("tokens generated per latency measurement"))
    compare: list[str] = field(
        default_factory=list,
        metadata=_help("NAME=DIR: also measure another model folder (a QAT or distilled model) in the report"),
    )
    stages: list[str] | None = field(
        default=None,
        metadata=_help(
            "optional: the stages as a list, to state their order (it must follow the declared one); unset: the "
            "stages whose settings are set"
        ),
    )

    def _check_values(self) -> None:
        _at_least_one(self, "latency_repeats", "max_new_tokens")
        for item in self.compare:
            if "=" not in item or not item.split("=", 1)[0]:
                raise InputError(f"compare takes NAME=DIR, got '{item}'")
        unknown = [s for s in self.stages or () if s not in ORDER]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], ORDER, n=1)
            raise InputError(
                f"stages: unknown stage '{unknown[0]}'"
                + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + f"; the stages are {', '.join(ORDER)}"
            )


class CompressionConfig(ArgumentGroup):
    """The stages of a compression pipeline, their amounts, the recovery training and the backends, one object
    of seven parts (`PARTS`, each a dataclass checking its own fields). Every stage is off unless its field is set;
    set stages run in `ORDER`. Build it from the flat keywords a YAML file or `hfopt compress` uses; it is
    validated on creation (each part's checks, then those across stages and the files): a mistake is one
    InputError naming the field, before any model is loaded."""

    PARTS = (
        ScoringData,
        StructureStages,
        TrainingStages,
        TrainingSettings,
        AugmentationSettings,
        DeploymentStages,
        ReportSettings,
    )

    def __init__(self, *parts, **values):
        super().__init__(*parts, **values)
        self._check_combinations()
        if self.onnx is not None:
            from ..compression.onnx import require_onnx

            require_onnx()
        self._check_files()

    # --- checks across stages --------------------------------------------------------------------------------

    def _check_files(self) -> None:
        for name in ("train_file", "prune_vocabulary", "importance_file", "calibration_file", "eval_file"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise InputError(f"{name} {value} does not exist")

    def _check_combinations(self) -> None:
        active = self.active_stages()
        if self.stages is not None:
            _check_order(self.stages)
            unset = [s for s in self.stages if s not in active]
            if unset:
                raise InputError(f"stages lists {unset[0]}, whose settings are not set ({_setting(unset[0])})")
            missing = [s for s in active if s not in self.stages]
            if missing:
                raise InputError(f"{_setting(missing[0])} is set but stages does not list {missing[0]}")
        needs_data = [s for s in active if s in TRAINING_STAGES]
        if needs_data and not self.train_file:
            raise InputError(f"the {needs_data[0]} stage trains: give it a train_file")
        if self.quantize_embeddings and self.quantize != "dynamic_int8":
            raise InputError("quantize_embeddings goes with quantize: dynamic_int8")
        if self.qat != "none" and self.quantize:
            raise InputError(f"qat ends in int8 already: it does not combine with quantize: {self.quantize}")
        if self.qat != "none" and self.prune_magnitude:
            raise InputError("qat trains every weight and would refill prune_magnitude's zeros: use one of them")
        for name in DISTILLING_SETTINGS:
            if getattr(self, name) and not distils(self.student_layers, self.recover, self.qat):
                raise InputError(
                    f"{name} goes with a distilling stage: student_layers, recover: distill or qat: distill"
                )
        augmented = [name for name in AUGMENTATION if getattr(self, name)]
        if augmented and not trains(self.student_layers, self.recover, self.qat):
            raise InputError(f"{augmented[0]} changes the rows of the training stages, and none is set "
                             "(student_layers, recover or qat)")  # fmt: skip
        unset = [s for s in self.augment_stages or () if s not in active]
        if unset:
            raise InputError(f"augment_stages lists {unset[0]}, which is not set ({_setting(unset[0])})")

    def augments(self, stage: str) -> bool:
        """Whether the training `stage` reads augmented rows."""
        chosen = self.augment_stages is None or stage in self.augment_stages
        return chosen and any(getattr(self, name) for name in AUGMENTATION)

    def check_task(self, task: str) -> None:
        """The checks that need the model's task (read from its config, before any work)."""
        if (self.data_format != "auto" or self.chat_template) and task != "causal_lm":
            raise InputError(f"data_format and chat_template are for causal_lm models; this one is {task}")
        if self.prune_vocabulary and task != "classification":
            raise InputError(f"prune_vocabulary is for classification models; this one is {task}")
        if self.student_layers and task == "seq2seq":
            raise InputError("student_layers makes students of single-stack models (BERT, GPT-2), not seq2seq")
        check_hidden_states(self.hidden_loss_weight, task)
        if task == "causal_lm" and any(getattr(self, name) for name in AUGMENTATION):
            raise InputError("augment_* changes the input tokens, which a causal_lm model's labels are: "
                             "augmentation is for classification and seq2seq models")  # fmt: skip
        if self.onnx and "onnx_int8_static" in self.onnx and task == "seq2seq":
            raise InputError("onnx_int8_static is for classification and causal_lm models: use onnx: [onnx, onnx_int8]")

    def check_tokenizer(self, tokenizer) -> None:
        """The checks that need the model's tokenizer (before any work)."""
        if self.augment_mask_prob and getattr(tokenizer, "mask_token_id", None) is None:
            raise InputError("augment_mask_prob needs a tokenizer with a mask token; this model's has none")

    # --- what runs ---------------------------------------------------------------------------------------------

    def active_stages(self) -> list[str]:
        """The stages whose settings are set, in `ORDER`."""
        on = {
            "student": bool(self.student_layers),
            "prune_vocabulary": bool(self.prune_vocabulary),
            "share_layers": bool(self.share_layers),
            "prune_heads": bool(self.prune_heads),
            "prune_ffn": bool(self.prune_ffn),
            "recover": self.recover != "none",
            "prune_magnitude": bool(self.prune_magnitude),
            "qat": self.qat != "none",
            "quantize": bool(self.quantize),
            "onnx": self.onnx is not None,
        }
        return [name for name in ORDER if on[name]]

    def stage_names(self) -> list[str]:
        return list(self.stages) if self.stages is not None else self.active_stages()

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> CompressionConfig:
        """A config from a mapping (a YAML file's): an unknown key is an InputError with a did-you-mean."""
        known = set(cls.owners())
        for key in values:
            if key not in known:
                hint = difflib.get_close_matches(str(key), sorted(known), n=1)
                raise InputError(f"unknown key '{key}' in {source}" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        return cls(**values)


def _setting(stage: str) -> str:
    return {"student": "student_layers", "onnx": "onnx"}.get(stage, stage)


def _check_order(stages: list[str]) -> None:
    for i, earlier in enumerate(stages):
        for later in stages[i + 1 :]:
            if earlier == later:
                raise InputError(f"stages lists {earlier} twice")
            if ORDER.index(later) < ORDER.index(earlier):
                why = _WHY_AFTER.get((earlier, later)) or _WHY_AFTER.get((earlier, "*"))
                why = why or _WHY_AFTER.get((later, "*")) or "the pipeline runs its stages in one declared order"
                raise InputError(
                    f"stages: {earlier} cannot come before {later} ({why}); the order is {' → '.join(ORDER)}"
                )


def load_config_file(path: str, known: set[str]) -> dict[str, Any]:
    """The mapping of a pipeline YAML file, its keys checked against `known` (did-you-mean for a typo)."""
    from ..args import read_yaml_config

    return read_yaml_config(path, known)


def onnx_stage_names(requested, task: str) -> list[str]:
    """The ONNX stages of `hfopt compress --onnx [names]`, in their order: for no names, all that the task has
    (static int8 is not offered for seq2seq models, whose decoder calibration would need target texts)."""
    supported = [n for n in ONNX_STAGES if not (task == "seq2seq" and n == "onnx_int8_static")]
    if not requested:
        return supported
    if "onnx_int8_static" in requested and task == "seq2seq":
        raise InputError("onnx_int8_static is for classification and causal_lm models: use --onnx onnx onnx_int8")
    return [n for n in ONNX_STAGES if n in requested]
