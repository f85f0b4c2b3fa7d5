"""Knowledge distillation inside the HF Trainer: the loss, `DistillationTrainingArguments`,
`DistillationTrainer` and `student_from_teacher`.

    L = α·CE(y, student) + (1 − α)·T²·KL(softmax(teacher/T) ‖ softmax(student/T))
        + hidden_loss_weight·MSE(hidden states) + attention_loss_weight·MSE(attention maps)

Example::

    teacher = AutoModelForSequenceClassification.from_pretrained("my-finetuned-bert")
    student = student_from_teacher(teacher, num_layers=3)
    args = DistillationTrainingArguments("out", alpha=0.5, temperature=2.0)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=train, ...)
    trainer.train()
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainingArguments

from .architectures import apply_structure, architecture
from .errors import InputError
from .models import set_dropout

__all__ = [
    "DistillationTrainer",
    "DistillationTrainingArguments",
    "distillation_loss",
    "even_blocks",
    "student_from_teacher",
]

logger = logging.getLogger(__name__)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
    shift: bool = False,
    kind: str = "kl",
) -> torch.Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)) averaged over examples (classification logits [B, C]) or
    over real tokens (token logits [B, L, V]: positions whose label is -100 are left out; `shift=True` for
    causal LMs, whose logits at i predict the token at i+1). `kind="mse"`: mean squared error of the logits.

    Example::

        loss = distillation_loss(student(**batch).logits, teacher(**batch).logits, temperature=2.0)
    """
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise InputError(
            f"student and teacher logits differ in size: {student_logits.shape[-1]} vs "
            f"{teacher_logits.shape[-1]} (vocabulary or label space mismatch)"
        )
    if student_logits.dim() == 3:
        if shift:
            student_logits, teacher_logits = student_logits[:, :-1], teacher_logits[:, :-1]
            labels = labels[:, 1:] if labels is not None else None
        mask = (
            (labels != -100)
            if labels is not None
            else torch.ones(student_logits.shape[:2], dtype=torch.bool, device=student_logits.device)
        )
        student_logits, teacher_logits = student_logits[mask], teacher_logits[mask]  # [tokens, V]
    if student_logits.dtype in (torch.float16, torch.bfloat16):  # softmax and KL in fp32 under mixed precision
        student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    if kind == "mse":
        return F.mse_loss(student_logits, teacher_logits.to(student_logits.dtype))
    if kind != "kl":
        raise InputError(f"distill_loss must be 'kl' or 'mse', got '{kind}'")
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.to(student_logits.dtype) / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="batchmean")
    return kl * temperature**2


@dataclass
class DistillationTrainingArguments(TrainingArguments):
    """TrainingArguments plus the distillation settings."""

    alpha: float = field(
        default=0.5, metadata={"help": "Weight of the hard-label loss; 1 - alpha goes to the KD term."}
    )
    temperature: float = field(default=2.0, metadata={"help": "Softmax temperature T of the KD term."})
    distill_loss: str = field(
        default="kl", metadata={"help": "'kl' (T²-scaled KL) or 'mse' on the logits.", "choices": ("kl", "mse")}
    )
    hidden_loss_weight: float = field(default=0.0, metadata={"help": "Weight of the hidden-state MSE."})
    attention_loss_weight: float = field(default=0.0, metadata={"help": "Weight of the attention-map MSE."})
    layer_map: list[int] | None = field(
        default=None,
        metadata={"help": "Teacher block (1-based) matched to each student block, e.g. 2 4 6. Unset: evenly spaced."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.alpha <= 1:
            raise InputError(f"alpha must be in [0, 1], got {self.alpha}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise InputError(f"temperature must be a finite number > 0, got {self.temperature}")
        if self.distill_loss not in ("kl", "mse"):
            raise InputError(f"distill_loss must be 'kl' or 'mse', got '{self.distill_loss}'")
        for name in ("hidden_loss_weight", "attention_loss_weight"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name} must be ≥ 0, got {getattr(self, name)}")


class DistillationTrainer(Trainer):
    """A Trainer whose loss distils `teacher_model` into the model being trained; everything else is Trainer's.

    The teacher is frozen, in eval mode, on the student's device, never in the optimizer, and runs under the
    same autocast as the student. The loss of each micro-batch is a mean (Trainer divides it by the
    accumulation steps: `loss_is_scaled_for_ga = False`), so 4 × GA1 and 2 × GA2 give the same update for
    equal-size micro-batches. Training logs show `loss_ce`, `loss_kd` (and `loss_hidden`, `loss_attention`).
    Under DeepSpeed the teacher is not sharded: each process holds a full copy. A learned projection for
    hidden states of different sizes trains with the student (not saved into it) and needs one process.
    """

    loss_is_scaled_for_ga = False

    def __init__(self, model=None, teacher_model=None, args: DistillationTrainingArguments | None = None, **kwargs):
        if teacher_model is None:
            raise InputError("DistillationTrainer needs a teacher_model")
        if args is not None and not isinstance(args, DistillationTrainingArguments):
            raise InputError("DistillationTrainer takes DistillationTrainingArguments")
        check_compatible(teacher_model, model)
        super().__init__(model=model, args=args, **kwargs)
        self.teacher = teacher_model.to(self.args.device).eval().requires_grad_(False)
        self.layer_map = None
        self.hidden_projection = None
        if self.args.hidden_loss_weight or self.args.attention_loss_weight:
            self.layer_map = self.args.layer_map or even_layer_map(_num_layers(model), _num_layers(teacher_model))
            if len(self.layer_map) != _num_layers(model):
                raise InputError(f"layer_map has {len(self.layer_map)} entries for {_num_layers(model)} student blocks")
            teacher_layers = _num_layers(teacher_model)
            if not all(1 <= t <= teacher_layers for t in self.layer_map):
                raise InputError(
                    f"layer_map entries are teacher blocks 1..{teacher_layers} (1-based), got {self.layer_map}"
                )
        if self.args.hidden_loss_weight:
            s, t = _hidden_size(model), _hidden_size(teacher_model)
            if s != t:
                if self.args.world_size > 1:
                    raise InputError("hidden-state distillation between different hidden sizes needs one process")
                self.hidden_projection = nn.Linear(s, t).to(self.args.device)
        if self.args.attention_loss_weight and _num_heads(model) != _num_heads(teacher_model):
            raise InputError(
                f"attention_loss_weight needs equal head counts: student {_num_heads(model)}, "
                f"teacher {_num_heads(teacher_model)}"
            )
        self._parts: dict[str, list[float]] = {}

    def evaluate_teacher(self, eval_dataset=None, metric_key_prefix: str = "teacher_eval") -> dict[str, float]:
        """The teacher's metrics on `eval_dataset` (default: this trainer's), computed as the student's are (the
        same collator, compute_metrics and batch size), without the student's progress.

        Trainer writes its own progress (`epoch`, `num_input_tokens_seen`) into the metrics of every evaluation;
        a second Trainer built for the teacher reports `num_input_tokens_seen = 0`, which, merged into the run's
        results, overwrote the student's real count. Only the teacher's own figures come back here.

        Example::

            results.update(trainer.evaluate_teacher())   # teacher_eval_accuracy, teacher_eval_loss, ...
        """
        args = copy.copy(self.args)
        args.include_num_input_tokens_seen = "no"
        evaluator = Trainer(
            model=self.teacher,
            args=args,
            eval_dataset=eval_dataset if eval_dataset is not None else self.eval_dataset,
            data_collator=self.data_collator,
            processing_class=self.processing_class,
            compute_metrics=self.compute_metrics,
        )
        metrics = evaluator.evaluate(metric_key_prefix=metric_key_prefix)
        return {k: v for k, v in metrics.items() if k not in ("epoch", "num_input_tokens_seen", "step")}

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        projection = self.hidden_projection
        if projection is not None and not any(
            p is projection.weight for g in optimizer.param_groups for p in g["params"]
        ):
            optimizer.add_param_group({"params": list(projection.parameters()), "weight_decay": 0.0})
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        extra = {}
        if args.hidden_loss_weight:
            extra["output_hidden_states"] = True
        if args.attention_loss_weight:
            extra["output_attentions"] = True
        outputs = model(**inputs, **extra)
        with torch.no_grad():
            teacher_outputs = self.teacher(**inputs, **extra)
        labels = inputs.get("labels")
        unwrapped = self.accelerator.unwrap_model(model)
        shift = student_logits_are_causal(unwrapped, outputs.logits)
        kd = distillation_loss(
            outputs.logits, teacher_outputs.logits, args.temperature, labels, shift, args.distill_loss
        )
        parts = {"loss_kd": kd}
        loss = (1 - args.alpha) * kd
        if args.alpha > 0:
            if outputs.get("loss") is None:
                raise InputError("alpha > 0 needs labels in the batch (the hard-label loss)")
            parts["loss_ce"] = outputs.loss
            loss = loss + args.alpha * outputs.loss
        if args.hidden_loss_weight:
            hidden = self._hidden_loss(outputs, teacher_outputs, inputs.get("attention_mask"))
            parts["loss_hidden"] = hidden
            loss = loss + args.hidden_loss_weight * hidden
        if args.attention_loss_weight:
            attention = sum(
                F.mse_loss(outputs.attentions[i], teacher_outputs.attentions[t - 1])
                for i, t in enumerate(self.layer_map)
            ) / len(self.layer_map)
            parts["loss_attention"] = attention
            loss = loss + args.attention_loss_weight * attention
        if model.training:
            for name, value in parts.items():
                self._parts.setdefault(name, []).append(float(value.detach()))
        return (loss, outputs) if return_outputs else loss

    def _hidden_loss(self, outputs, teacher_outputs, attention_mask):
        student_states = (
            outputs.hidden_states if outputs.get("hidden_states") is not None else outputs.decoder_hidden_states
        )
        teacher_states = (
            teacher_outputs.hidden_states
            if teacher_outputs.get("hidden_states") is not None
            else teacher_outputs.decoder_hidden_states
        )
        total = 0.0
        for i, t in enumerate(self.layer_map):
            s = student_states[i + 1]
            if self.hidden_projection is not None:
                s = self.hidden_projection(s)
            error = (s - teacher_states[t]).pow(2).mean(-1)
            if attention_mask is not None and attention_mask.shape == error.shape:
                error = (error * attention_mask).sum() / attention_mask.sum()
            else:
                error = error.mean()
            total = total + error
        return total / len(self.layer_map)

    def log(self, logs, start_time=None):
        if "loss" in logs and self._parts:  # a training log: add the mean of each part since the last one
            for name, values in self._parts.items():
                logs[name] = sum(values) / len(values)
            self._parts = {}
        super().log(logs, start_time)


def student_logits_are_causal(model, logits) -> bool:
    """Token logits of a decoder-only model predict the next token: they need shifting against the labels."""
    return logits.dim() == 3 and not getattr(model.config, "is_encoder_decoder", False)


def check_compatible(teacher, student) -> None:
    """Fail before training when teacher and student cannot be compared: other vocabulary or label space."""
    if student is None:
        return
    t, s = teacher.config, student.config
    if getattr(t, "vocab_size", None) != getattr(s, "vocab_size", None):
        raise InputError(
            f"teacher and student vocabularies differ: {t.vocab_size} vs {s.vocab_size} tokens; "
            "distil between models sharing one tokenizer"
        )
    t_labels, s_labels = getattr(t, "id2label", None), getattr(s, "id2label", None)
    classification = "ForSequenceClassification" in type(teacher).__name__
    if classification and (
        t.num_labels != s.num_labels
        or {int(k): v for k, v in t_labels.items()} != {int(k): v for k, v in s_labels.items()}
    ):
        raise InputError(f"teacher and student label spaces differ: {t_labels} vs {s_labels}")


def even_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Evenly spaced teacher blocks (1-based) for the student's blocks, ending at the teacher's last."""
    return [round((i + 1) * teacher_layers / student_layers) for i in range(student_layers)]


def even_blocks(num_layers: int, total: int) -> list[int]:
    """The teacher blocks (0-based) a student of `num_layers` is made of by default: every other block from the
    first for half the depth, as DistilBERT; evenly spaced from the first in general."""
    return [round(i * total / num_layers) for i in range(num_layers)]


def student_from_teacher(teacher, num_layers: int, layers: list[int] | None = None, dropout: float | None = None):
    """A smaller model of the teacher's class: the teacher's embeddings, head and a subset of its blocks
    (0-based `layers`; default every other block from the first, as DistilBERT), for single-stack models
    (BERT, RoBERTa, ELECTRA, DeBERTa-v2, DistilBERT, GPT-2); `dropout` sets the student's dropout.

    Example::

        student = student_from_teacher(teacher, num_layers=3)          # blocks 0, 2, 4 of a 6-block teacher
    """
    arch = architecture(teacher)
    arch.require_single_stack("student_from_teacher")
    blocks = arch.blocks()
    total = len(blocks)
    if layers is None and not 1 <= num_layers <= total:
        raise InputError(f"student_num_layers is {num_layers}; the teacher has {total} blocks to make it from")
    layers = list(layers) if layers is not None else even_blocks(num_layers, total)
    if not 1 <= num_layers <= total or len(layers) != num_layers or not all(0 <= i < total for i in layers):
        raise InputError(
            f"student layers {layers} must be {num_layers} block indices (0-based) of the teacher's {total}"
        )
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = num_layers
    if dropout is not None:
        set_dropout(config, dropout)
    for key in ("hfopt_heads_per_layer", "hfopt_ffn_sizes"):  # a pruned teacher: keep the chosen blocks' sizes
        if getattr(config, key, None):
            setattr(config, key, [getattr(config, key)[i] for i in layers])
    student = type(teacher)(config)
    apply_structure(student)
    prefix = blocks[0][0].rsplit(".", 1)[0]  # e.g. "bert.encoder.layer" or "transformer.h"
    teacher_state = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        if key.startswith(prefix + "."):
            index, rest = key[len(prefix) + 1 :].split(".", 1)
            state[key] = teacher_state[f"{prefix}.{layers[int(index)]}.{rest}"]
        else:
            state[key] = teacher_state[key]
    student.load_state_dict(state)
    return student


def _num_layers(model) -> int:
    return model.config.num_hidden_layers


def _hidden_size(model) -> int:
    return model.config.hidden_size


def _num_heads(model) -> int:
    return model.config.num_attention_heads
