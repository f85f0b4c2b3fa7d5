"""The stages of the compression pipeline: for each, the settings and data files its result depends on (its
fingerprint), its row label in the report, and what it does to the model.

Example::

    model, info = apply_stage("prune_heads", model, context)   # info: what the report keeps of the stage
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import InputError
from .config import AUGMENTATION, TRAINING_STAGES, CompressionConfig

STAGES_DIR = "stages"  # output_dir/stages/NN_<stage>/: each finished stage, with STAGE_FILE
STAGE_FILE = "stage.json"  # its fingerprint, label, wall time and figures
TRAINING_DIR = ".training"  # output_dir/.training/<stage>/: a training stage's checkpoints until it finishes

__all__ = [
    "STAGES_DIR",
    "STAGE_FILE",
    "TRAINING_DIR",
    "Context",
    "apply_stage",
    "load_teacher",
    "stage_files",
    "stage_label",
    "stage_settings",
]

_DATA = ("text_column_names", "label_column_name", "source_lang", "target_lang", "data_format", "chat_template")
# what a training stage's result depends on (not save_steps)
_TRAINING = ("max_train_samples", "batch_size", "seed", "alpha", "temperature", "hidden_loss_weight", *AUGMENTATION,
             *_DATA)  # fmt: skip
# newer settings: part of a stage's fingerprint only when set, so the stages of earlier runs keep theirs
_UNLESS_DEFAULT = {"hidden_loss_weight": 0.0, **dict.fromkeys(AUGMENTATION, 0.0)}
_SETTINGS = {
    "student": ("student_layers", "student_epochs", "student_learning_rate", *_TRAINING),
    "prune_vocabulary": _DATA,
    "share_layers": ("share_layers", "share_layers_init"),
    "prune_heads": ("prune_heads", *_DATA),
    "prune_ffn": ("prune_ffn", *_DATA),
    "recover": ("recover", "recover_epochs", "recover_learning_rate", *_TRAINING),
    "prune_magnitude": ("prune_magnitude",),
    "qat": ("qat", "qat_epochs", "qat_learning_rate", *_TRAINING),
    "quantize": ("quantize", "quantize_embeddings"),
    "onnx": ("onnx", "calibration_samples", *_DATA),
}


def load_teacher(
    source: str, task_name: str, tokenizer_name, tokenizer, original, model_dir, hidden_loss_weight: float = 0.0
) -> nn.Module:
    """The model at `source` that distillation learns from, refused (one line) when its tokenizer or its classes
    differ from those of `original` (the model of `model_dir`), or, with `hidden_loss_weight`, its hidden size:
    before a stage trains on it."""
    from ..distillation import check_compatible
    from .source import load_source

    teacher, its_tokenizer, _ = load_source(source, task_name, tokenizer_name)
    if its_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise InputError(f"teacher {source}: its tokenizer differs from {model_dir}'s")
    check_compatible(teacher, original)
    sizes = (getattr(teacher.config, "hidden_size", None), getattr(original.config, "hidden_size", None))
    if hidden_loss_weight and sizes[0] != sizes[1]:  # a learned projection would restart when a stage resumes
        raise InputError(f"hidden_loss_weight matches hidden states of one size: teacher {source} has {sizes[0]}, "
                         f"{model_dir} {sizes[1]}")  # fmt: skip
    return teacher


def stage_settings(name: str, config: CompressionConfig) -> dict[str, Any]:
    """The config values a stage's result depends on."""
    values = {key: getattr(config, key) for key in _SETTINGS[name]}
    if name in ("recover", "qat") and getattr(config, name) != "distill":
        values.pop("hidden_loss_weight")  # fine-tuning has no teacher to match
    if name in TRAINING_STAGES and not config.augments(name):
        values.update(dict.fromkeys(AUGMENTATION, 0.0))  # augment_stages leaves this stage's rows as they are
    return {k: v for k, v in values.items() if k not in _UNLESS_DEFAULT or v != _UNLESS_DEFAULT[k]}


def stage_files(name: str, config: CompressionConfig) -> dict[str, str | None]:
    """The data files a stage reads ({setting: path}); their content is part of its fingerprint."""
    if name in ("student", "recover", "qat"):
        distill = name == "student" or getattr(config, name) == "distill"
        return {"train_file": config.train_file, "teacher": config.teacher if distill else None}
    if name == "prune_vocabulary":
        return {"prune_vocabulary": config.prune_vocabulary}
    if name in ("prune_heads", "prune_ffn"):
        return {"importance_file": config.importance_file or config.eval_file}
    if name == "onnx":
        static = not config.onnx or "onnx_int8_static" in config.onnx
        return {"calibration_file": (config.calibration_file or config.eval_file) if static else None}
    return {}


def stage_label(name: str, config: CompressionConfig) -> str:
    """The stage's row in the report (the names `hfopt compress` has always used)."""
    if name == "student":
        return f"student_{len(config.student_layers) if len(config.student_layers) > 1 else config.student_layers[0]}"
    if name in ("recover", "qat"):
        return f"{name}_{getattr(config, name)}"
    if name == "prune_vocabulary":
        return name
    return f"{name}_{getattr(config, name)}"


def shared_work_name(name: str, fp: str) -> str:
    """The checkpoint folder of training stage `name` when many pipelines share one training folder."""
    return f"{name}-{fp}"


@dataclass
class Context:
    """What stages share: the config, the task, the tokenizer, the original model (the teacher of training
    stages), the folder for training checkpoints, extra Trainer callbacks, and data loaded once."""

    config: CompressionConfig
    task_name: str
    tokenizer: Any
    original: nn.Module
    model_dir: str
    training_dir: Path
    callbacks: list = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)  # stage name -> fingerprint (training resume)
    _data: dict = field(default_factory=dict)
    shared_training: bool = False  # one training folder per fingerprint: several pipelines share training_dir

    def training_work_dir(self, name: str) -> Path:
        """Where training stage `name` keeps its checkpoints until it finishes."""
        return self.training_dir / (shared_work_name(name, self.fingerprints[name]) if self.shared_training else name)

    def remove_training_work(self, name: str) -> None:
        import shutil

        shutil.rmtree(self.training_work_dir(name), ignore_errors=True)

    def teacher(self) -> nn.Module:
        """The model distillation learns from: config.teacher (loaded once) or the original model."""
        if self.config.teacher is None:
            return self.original
        if "teacher" not in self._data:
            c = self.config
            self._data["teacher"] = load_teacher(
                c.teacher, self.task_name, c.tokenizer_name, self.tokenizer, self.original, self.model_dir,
                c.hidden_loss_weight,
            )  # fmt: skip
        return self._data["teacher"]

    def data(self, file: str, role: str, limit: int | None = None):
        """The task's data in `file` (a CompressionTask), read once and checked against the model."""
        from ..compression.tasks import load_task

        key = (file, role, limit)
        if key not in self._data:
            c = self.config
            self._data[key] = load_task(
                self.task_name,
                self.original,
                self.tokenizer,
                file,
                self.model_dir,
                c.text_column_names,
                c.label_column_name,
                c.source_lang,
                c.target_lang,
                limit,
                c.max_new_tokens,
                role=role,
                lazy=role == "train_file",  # read for training only: no evaluation batches
                data_format=c.data_format,
                chat_template=c.chat_template,
            )
        return self._data[key]


def apply_stage(name: str, model: nn.Module, ctx: Context) -> tuple[nn.Module, dict[str, Any]]:
    """Run one stage on `model` (in place where the stage allows); returns the model and what the report keeps."""
    c = ctx.config
    if name == "student":
        from ..distillation import student_from_teacher

        layers = c.student_layers  # [N]: N evenly spaced blocks; more numbers: those blocks
        many = len(layers) > 1
        student = student_from_teacher(model, len(layers) if many else layers[0], layers if many else None)
        return _train(name, student, ctx, "distill", c.student_epochs, c.student_learning_rate)
    if name == "prune_vocabulary":
        from ..compression.vocabulary import prune_vocabulary

        texts = ctx.data(c.prune_vocabulary, "prune_vocabulary").texts
        info = prune_vocabulary(model, ctx.tokenizer, texts)
        return model, {"vocabulary": dict(info, file=str(c.prune_vocabulary))}
    if name == "share_layers":
        from ..compression.sharing import share_layers

        share_layers(model, num_groups=c.share_layers, init=c.share_layers_init)
        return model, {}
    if name in ("prune_heads", "prune_ffn"):
        from ..compression.pruning import prune_ffn, prune_heads

        scorer = (
            ctx.data(c.importance_file, "importance_file", 1024)
            if c.importance_file
            else ctx.data(c.eval_file, "eval_file", c.max_eval_samples)
        )
        batches = scorer.importance_batches()
        (prune_heads if name == "prune_heads" else prune_ffn)(model, getattr(c, name), batches)
        return model, {}
    if name == "recover":
        return _train(name, model, ctx, c.recover, c.recover_epochs, c.recover_learning_rate)
    if name == "prune_magnitude":
        from ..compression.pruning import prune_magnitude

        prune_magnitude(model, amount=c.prune_magnitude)
        return model, {}
    if name == "qat":
        from ..compression.qat import convert_qat, prepare_qat

        prepare_qat(model)
        model, info = _train(name, model, ctx, c.qat, c.qat_epochs, c.qat_learning_rate)
        return convert_qat(model), info
    if name == "quantize":
        from ..compression.quantization import quantize

        return quantize(model, c.quantize, embeddings=c.quantize_embeddings), {}
    raise ValueError(f"unknown stage {name}")  # onnx stages are exported by the runner


def _train(name, model, ctx: Context, objective: str, epochs: float, learning_rate: float):
    from .training import train_stage

    data = ctx.data(ctx.config.train_file, "train_file", ctx.config.max_train_samples)
    return train_stage(
        model,
        data,
        objective=objective,
        teacher=ctx.teacher() if objective == "distill" else None,
        config=ctx.config,
        epochs=epochs,
        learning_rate=learning_rate,
        augment=ctx.config.augments(name),
        work_dir=ctx.training_work_dir(name),
        fingerprint=ctx.fingerprints[name],
        callbacks=ctx.callbacks,
    )
