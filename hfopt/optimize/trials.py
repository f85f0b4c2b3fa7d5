"""One trial of `hfopt optimize`: the settings drawn from the search space become a `CompressionConfig`, its
model is built (the training stages shared through a `StageCache`), screened on part of the selection data,
scored on all of it, timed against the original, and saved while it may still be chosen.

Example::

    row = run_trial(setup, {"student_layers": 3, "prune_heads": 0.25, ..., "deployment": "pytorch:dynamic_int8"})
    row["status"], row["loss"], row["speedup_b16"]
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..pipeline import CompressionConfig
from ..pipeline.config import TRAINING_EPOCHS, without_idle_settings
from ..pipeline.fingerprint import fingerprint
from .config import student_blocks

logger = logging.getLogger(__name__)

__all__ = [
    "Setup",
    "deployment_choices",
    "metric_of_rows",
    "pipeline_values",
    "run_trial",
    "selection_rows",
    "training_estimate",
    "trial_config",
]

ACCURACY_LIKE = ("accuracy", "f1")


@dataclass
class Setup:
    """What every trial shares: the original model and its figures, the data, the budget, the cache."""

    original: nn.Module
    tokenizer: Any
    task_name: str
    base: dict[str, Any]  # pipeline settings every trial shares
    train_file: str
    selection_file: str
    selection: Any  # CompressionTask of the selection file
    screen: Any | None  # its first rows, for screening
    calibration: Any | None  # training rows for static ONNX int8 calibration
    cache: Any  # StageCache
    shared_data: dict
    headline: str
    higher_is_better: bool
    original_selection: float
    original_rows: Any | None  # the original's per-row figures on the selection data (`selection_rows`)
    original_screen: float | None
    original_size: int
    budget: float
    relative: bool
    repeats: int
    threads: int | None
    work: Path  # scratch folder of the trial being run
    callbacks: tuple = ()

    def loss(self, original: float, value: float) -> float:
        """What the metric lost against the original (absolute, or a fraction of the original's)."""
        lost = original - value if self.higher_is_better else value - original
        return lost / abs(original) if self.relative else lost


def deployment_choices(space: dict[str, list]) -> list[str]:
    """The number format and runtime as one choice: PyTorch with each quantization, or an ONNX Runtime stage
    (which quantizes itself)."""
    choices = [f"pytorch:{q}" for q in space["quantize"]] if "pytorch" in space["backend"] else []
    return choices + [b for b in space["backend"] if b != "pytorch"]


def pipeline_values(params: dict[str, Any], setup_base: dict, train_file: str, eval_file: str) -> dict[str, Any]:
    """The `CompressionConfig` keywords of a trial's draws. Settings that would change nothing are dropped
    (recovery with nothing pruned), and those that cannot combine are resolved (QAT refills magnitude zeros)."""
    values = dict(setup_base, eval_file=eval_file, train_file=train_file)
    if params.get("student_layers"):
        values["student_layers"] = student_blocks(params["student_layers"])
    pruned = False
    if params.get("prune_vocabulary"):
        values["prune_vocabulary"], pruned = train_file, True
    for name in ("prune_heads", "prune_ffn"):
        if params.get(name):
            values[name], values["importance_file"], pruned = params[name], train_file, True
    if pruned and params.get("recover", "none") != "none":
        values["recover"], values["recover_epochs"] = params["recover"], params.get("recover_epochs", 1.0)
    deployment = params.get("deployment", "pytorch:none")
    quantize = deployment.split(":", 1)[1] if deployment.startswith("pytorch:") else "none"
    if params.get("prune_magnitude") and quantize != "qat":
        values["prune_magnitude"] = params["prune_magnitude"]
    if quantize == "qat":
        values["qat"] = "distill"
    elif quantize == "dynamic_int8_embeddings":
        values["quantize"], values["quantize_embeddings"] = "dynamic_int8", True
    elif quantize != "none":
        values["quantize"] = quantize
    values = without_idle_settings(values)  # pipeline: teacher, hidden_loss_weight, augment_* where a stage takes them
    if not deployment.startswith("pytorch:"):
        values["onnx"] = [deployment]
        if deployment == "onnx_int8_static":
            values["calibration_file"], values["calibration_samples"] = train_file, 128
    return values


def trial_key(setup: Setup, config: CompressionConfig, deployment: str) -> str:
    """Trials with equal keys make the same model: the second one reuses the first one's figures."""
    return fingerprint({"plan": setup.cache.plan(config), "deployment": deployment})


def trial_config(setup: Setup, params: dict[str, Any]) -> tuple[dict[str, Any], CompressionConfig, str]:
    """A trial's pipeline keywords, the `CompressionConfig` of its PyTorch stages (the ONNX stage is the
    trial's own), and its key (equal keys: the same model)."""
    values = pipeline_values(params, setup.base, setup.train_file, setup.selection_file)
    onnx_keys = ("onnx", "calibration_file", "calibration_samples")
    config = CompressionConfig(**{k: v for k, v in values.items() if k not in onnx_keys})
    return values, config, trial_key(setup, config, params.get("deployment", "pytorch:none"))


def training_estimate(setup: Setup, params: dict[str, Any]) -> float | None:
    """Seconds the trial's training stages not on disk yet may take: the epochs each one has left (all, or what
    its checkpoint has not done) at the pace of the slowest stage of its kind trained so far in the search's folder
    (else of the slowest kind); 0 when it trains nothing, None when nothing has trained yet to tell."""
    _, config, _ = trial_config(setup, params)
    stages = setup.cache.to_train(config)
    if not stages:
        return 0.0
    paces = setup.cache.seconds_per_epoch()
    if not paces:
        return None
    fallback = max(paces.values())
    return sum(float(getattr(config, TRAINING_EPOCHS[n])) * left * paces.get(n, fallback) for n, left in stages.items())


def run_trial(setup: Setup, params: dict[str, Any]) -> dict[str, Any]:
    """Build, screen, score, time and save one trial's model into `setup.work`; its row for trials.csv."""
    from ..compression.report import weights_size

    values, config, key = trial_config(setup, params)
    deployment = params.get("deployment", "pytorch:none")
    row: dict[str, Any] = {"params": params, "pipeline": values, "key": key}
    model, log = setup.cache.build_model(config, setup.original, setup.tokenizer, setup.task_name, setup.shared_data,
                                         setup.callbacks)  # fmt: skip
    row["stages"] = log
    shutil.rmtree(setup.work, ignore_errors=True)
    setup.work.mkdir(parents=True)
    model = _deploy(setup, model, deployment)
    if setup.screen is not None:
        value = _finite(setup.screen.evaluate(model)[setup.headline], setup.headline)
        row["screen_metric"] = value
        lost = setup.loss(setup.original_screen, value)
        if lost > _screen_limit(setup, value):
            row.update(status="screened out", loss=lost, constraint=lost - setup.budget)
            return row
    value, error = _scored(setup, model)
    lost = setup.loss(setup.original_selection, value)
    timings = setup.selection.latency({"original": setup.original, "trial": model}, repeats=setup.repeats)
    size = weights_size(setup.work / "model")
    row.update(
        status="complete",
        metric=value,
        loss=lost,
        loss_se=error,
        constraint=lost - setup.budget,  # ≤ 0: within the budget
        latency_b1_ms=timings["trial"]["latency_b1_p50_ms"],
        latency_b16_ms=timings["trial"]["latency_b16_p50_ms"],
        speedup_b1=timings["original"]["latency_b1_p50_ms"] / timings["trial"]["latency_b1_p50_ms"],
        speedup_b16=timings["original"]["latency_b16_p50_ms"] / timings["trial"]["latency_b16_p50_ms"],
        size_bytes=size,
        size_reduction=setup.original_size / size,
    )
    return row


def selection_rows(task, headline: str, model):
    """What a paired standard error of a loss is made of, per row of `task`: whether the model is right
    (accuracy), its summed token loss and token count (perplexity: a row is an example, or a block of plain
    text), or the BLEU statistics of its translation (BLEU, bootstrapped); None for other metrics."""
    if headline == "accuracy":
        return task.right_rows(model)
    if headline == "perplexity":
        return task.row_losses(model)
    if headline == "bleu":
        return task.bleu_rows(model)
    return None


def metric_of_rows(headline: str, rows) -> float:
    """The headline metric of `selection_rows`: the task's `evaluate` figure, from the same pass."""
    if headline == "accuracy":
        return float(rows.mean())
    if headline == "bleu":
        from ..metrics import bleu_of_rows

        return bleu_of_rows(rows)
    from ..compression.tasks.causal_lm import perplexity

    return perplexity(*rows.sum(0))


def _scored(setup: Setup, model) -> tuple[float, float | None]:
    """The trial's headline metric on the selection rows and, for accuracy, perplexity and BLEU, the standard
    error of its loss, paired with the original's rows (in the loss's units: a fraction of the original's figure
    under a relative budget)."""
    if setup.original_rows is None:
        return _finite(setup.selection.evaluate(model)[setup.headline], setup.headline), None
    from ..metrics import paired_bleu_change, paired_drop, paired_perplexity_change

    rows = selection_rows(setup.selection, setup.headline, model)
    value = _finite(metric_of_rows(setup.headline, rows), setup.headline)
    if len(rows) < 2:  # no spread to measure
        return value, None
    if setup.headline in ("accuracy", "bleu"):
        paired = paired_drop if setup.headline == "accuracy" else paired_bleu_change
        _, error = paired(setup.original_rows, rows)
        return value, (error / abs(setup.original_selection) if setup.relative else error)
    _, error = paired_perplexity_change(setup.original_rows, rows)  # a fraction of the original's perplexity
    return value, (error if setup.relative else error * setup.original_selection)


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"the trial's {name} is {value}")  # a failed trial, not a figure to compare
    return value


def _screen_limit(setup: Setup, value: float) -> float:
    """A trial is clearly outside the budget when, on the screening rows, it lost more than three budgets and,
    for accuracy and F1, three binomial standard errors on that many rows (relative to the original's figure
    under a relative budget, as the loss is)."""
    error = 0.0
    if setup.headline in ACCURACY_LIKE:
        n = len(setup.screen.texts)
        p = min(max(value, 1e-3), 1 - 1e-3)
        error = math.sqrt(p * (1 - p) / n)
        if setup.relative:
            error /= max(abs(setup.original_screen), 1e-3)
    return 3 * setup.budget + 3 * error


def _deploy(setup: Setup, model: nn.Module, deployment: str):
    """Save the trial's model as it would be deployed into work/model (a PyTorch folder, or the ONNX Runtime
    stage) and return what to score and time."""
    from ..compression.io import save_compressed

    if deployment.startswith("pytorch:"):
        save_compressed(model, setup.work / "model", setup.tokenizer)
        return model
    from ..compression.onnx import export_stages, load_onnx

    batches = setup.calibration.metric_batches if deployment == "onnx_int8_static" else None
    folders = export_stages(model, setup.tokenizer, [deployment], setup.work / "onnx", setup.task_name, batches)
    folders[deployment].rename(setup.work / "model")
    shutil.rmtree(setup.work / "onnx", ignore_errors=True)
    return load_onnx(setup.work / "model", threads=setup.threads, spinning=False)
