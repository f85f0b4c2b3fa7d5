"""Inference latency of models on real inputs, the one implementation the compression report, distillation,
strategy studies and benchmarks share: warm-up, models timed interleaved, p50/p90 at batch 1 and 16.

Example::

    rows = latency_rows({"teacher": teacher, "student": student}, tokenizer, texts)
    rows["student"]["latency_b16_p50_ms"], speedups(rows, "teacher")["student"]["speedup_b16"]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch

__all__ = [
    "BATCH_SIZES",
    "batches_of",
    "latency_rows",
    "measure_latency",
    "speedups",
    "trained_model_latency",
    "unstable_latency",
]

logger = logging.getLogger(__name__)

BATCH_SIZES = (1, 16)
# Beyond these a timing is unstable (a busy machine, frequency scaling): p90 over p50 of one model's rounds, and
# the ratio of the medians of the first and second half of its rounds (drift while the models were interleaved).
MAX_SPREAD = 1.5
MAX_DRIFT = 1.3


def batches_of(tokenizer, texts: list[str], batch_size: int, max_length: int = 128) -> list[dict]:
    """Tokenized batches (padded to their longest row) of the given texts, cycling through them."""
    texts = [texts[i % len(texts)] for i in range(max(batch_size, len(texts)))]
    return [
        dict(
            tokenizer(
                texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
        )
        for i in range(0, len(texts) - batch_size + 1, batch_size)
    ]


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")  # models outside PyTorch (ONNX Runtime sessions) take CPU tensors


def _forward(model, inputs: dict):
    return model(**inputs)


@torch.inference_mode()
def measure_latency(
    models: dict[str, Callable],
    batches: list[dict],
    repeats: int = 20,
    warmup: int = 3,
    run: Callable = _forward,
    clock: Callable[[], float] = time.perf_counter,
    settle_calls: int = 1,
) -> dict[str, dict[str, float]]:
    """Milliseconds per batch of each model, p50 and p90 over `repeats` rounds, and `drift`: the median of the
    later half of its rounds over that of the earlier half (1.0 when steady). The models run interleaved
    (model A, model B, A, B, ...) on the same batches so that machine noise hits them alike; `warmup` rounds
    are not timed. `run(model, inputs)` is what is timed (a forward pass by default; `model.generate(...)` for
    generation); `clock()` gives seconds (tests pass a scripted one). Also records the number of torch threads.

    With more than one model, each timed call follows `settle_calls` untimed calls of the same model on the same
    batch: a runtime's threads spin on the cores for a while after its work (PyTorch's OpenMP pool, ONNX
    Runtime's), and would otherwise slow the next model down (in one measurement on 2 cores, an ONNX Runtime
    int8 model timed right after a PyTorch one ran 1.2× slower at batch 16, and every model 1.3–1.5× slower at
    batch 1). Each model is timed as it runs when it serves calls back to back (with one call between, the
    weights of a large model may still be partly out of the cache at batch 1).

    Example::

        measure_latency({"teacher": teacher, "student": student}, batches_of(tokenizer, texts, 16))
    """
    for model in models.values():
        if hasattr(model, "eval"):
            model.eval()
    timings: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(warmup + repeats):
        batch = batches[round_ % len(batches)]
        for name, model in models.items():
            inputs = {k: v.to(_device(model)) for k, v in batch.items()}
            if round_ >= warmup and len(models) > 1:
                for _ in range(settle_calls):
                    run(model, inputs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = clock()
            run(model, inputs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            elapsed_ms = (clock() - start) * 1000
            if round_ >= warmup:
                timings[name].append(elapsed_ms)
    return {
        name: {
            "p50_ms": float(np.percentile(t, 50)),
            "p90_ms": float(np.percentile(t, 90)),
            "drift": _drift(t),
            "threads": torch.get_num_threads(),
        }
        for name, t in timings.items()
    }


def _drift(timings: list[float]) -> float:
    """max/min of the medians of the first and the second half of the rounds (1.0 with fewer than 4 rounds)."""
    if len(timings) < 4:
        return 1.0
    half = len(timings) // 2
    early, late = float(np.median(timings[:half])), float(np.median(timings[half:]))
    return max(early, late) / min(early, late) if min(early, late) > 0 else float("inf")


def unstable_latency(row: dict[str, float], max_spread: float = MAX_SPREAD, max_drift: float = MAX_DRIFT) -> list[str]:
    """Why a row's latency figures (`latency_rows`) cannot be trusted, one phrase per batch size: p90/p50 above
    `max_spread`, or the timing drifting between the first and second half of the rounds by more than
    `max_drift`. Empty when they are steady.

    Example::

        unstable_latency({"latency_b1_p50_ms": 10, "latency_b1_p90_ms": 40, "latency_b1_drift": 1.0})
        # ['b1 p90/p50 = 4.0']
    """
    reasons = []
    sizes = [k[len("latency_b") : -len("_p50_ms")] for k in row if k.startswith("latency_b") and k.endswith("_p50_ms")]
    for size in sorted(sizes, key=lambda s: int(s) if s.isdigit() else 0):
        key = f"latency_b{size}_p50_ms"
        p50, p90 = row[key], row.get(f"latency_b{size}_p90_ms", row[key])
        drift = row.get(f"latency_b{size}_drift", 1.0)
        if p50 > 0 and p90 / p50 > max_spread:
            reasons.append(f"b{size} p90/p50 = {p90 / p50:.1f}")
        if drift > max_drift:
            reasons.append(f"b{size} drifted {drift:.1f}× between rounds")
    return reasons


def latency_rows(
    models: dict[str, Callable],
    tokenizer,
    texts: list[str],
    batch_sizes=BATCH_SIZES,
    repeats: int = 20,
    run: Callable = _forward,
    per: int = 1,
    max_length: int = 128,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[str, float]]:
    """`latency_b{n}_p50_ms`, `latency_b{n}_p90_ms` and `latency_b{n}_drift` (see `measure_latency`) of every
    model at every batch size (all models timed interleaved at each size), and `threads`. `per` divides the
    times (the number of generated tokens, for a per-token latency). `unstable_latency(row)` says whether a
    row's figures can be trusted."""
    rows: dict[str, dict[str, float]] = {name: {} for name in models}
    for batch_size in batch_sizes:
        figures = measure_latency(
            models, batches_of(tokenizer, texts, batch_size, max_length), repeats=repeats, run=run, clock=clock
        )
        for name, f in figures.items():
            rows[name][f"latency_b{batch_size}_p50_ms"] = f["p50_ms"] / per
            rows[name][f"latency_b{batch_size}_p90_ms"] = f["p90_ms"] / per
            rows[name][f"latency_b{batch_size}_drift"] = f["drift"]
            rows[name]["threads"] = f["threads"]
    return rows


def speedups(rows: dict[str, dict[str, float]], baseline: str) -> dict[str, dict[str, float]]:
    """Add `speedup_b{n}` (the baseline's p50 over each model's) to every row, in place; returns rows."""
    base = rows[baseline]
    for row in rows.values():
        for key in [k for k in row if k.startswith("latency_b") and k.endswith("_p50_ms")]:
            size = key[len("latency_b") : -len("_p50_ms")]
            row[f"speedup_b{size}"] = base[key] / row[key]
    return rows


def trained_model_latency(
    trainer, texts: list[str], repeats: int = 20, new_tokens: int | None = None
) -> dict[str, float]:
    """CPU inference latency (`latency_b1_p50_ms`, ...) of the model a Trainer trained, on `texts` with its
    tokenizer: a forward pass, or with `new_tokens` greedy generation of that many tokens, per token (seq2seq).
    Measured on the main process after training (the saved model is reloaded when DeepSpeed or FSDP hold it
    sharded); an empty dict on the other processes.

    Example::

        results.update(trained_model_latency(trainer, validation_texts))
    """
    import copy

    if not trainer.is_world_process_zero():
        return {}
    model = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        model = type(model).from_pretrained(trainer.args.output_dir)
    else:
        model = copy.deepcopy(model)
        # The saved model as it is (fp32): mixed-precision training wraps the instance's forward in autocast, and
        # the copy would keep that wrapper; the class's own forward runs the copy as saved.
        model.__dict__.pop("forward", None)
        model.__dict__.pop("_original_forward", None)
    run, per = _forward, 1
    if new_tokens:

        def run(m, inputs):
            m.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, num_beams=1)

        per = new_tokens
    rows = latency_rows(
        {"model": model.float().cpu().eval()}, trainer.processing_class, texts[:256], repeats=repeats, run=run, per=per
    )
    reasons = unstable_latency(rows["model"])
    if reasons:
        logger.warning("The latency figures are unreliable (%s): rerun on an idle machine.", "; ".join(reasons))
    return {k: v for k, v in rows["model"].items() if k.startswith("latency_")}
