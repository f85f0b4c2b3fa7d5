"""CPU/GPU inference latency of a model on real inputs: warm-up, repeated timed runs, p50/p90."""

from __future__ import annotations

import time

import numpy as np
import torch


def batches_of(tokenizer, texts: list[str], batch_size: int, max_length: int = 128) -> list[dict]:
    """Tokenized batches (padded to their longest row) of the given texts, cycling through them."""
    texts = [texts[i % len(texts)] for i in range(max(batch_size, len(texts)))]
    return [dict(tokenizer(texts[i: i + batch_size], padding=True, truncation=True, max_length=max_length,
                           return_tensors="pt"))
            for i in range(0, len(texts) - batch_size + 1, batch_size)]


@torch.inference_mode()
def measure_latency(models: dict[str, torch.nn.Module], batches: list[dict], repeats: int = 20,
                    warmup: int = 3) -> dict[str, dict[str, float]]:
    """Milliseconds per batch of each model, p50 and p90 over `repeats` rounds. The models run interleaved
    (model A, model B, A, B, ...) on the same batches so that machine noise hits them alike; `warmup` rounds
    are not timed. Also records the number of torch threads.

    Example::

        measure_latency({"teacher": teacher, "student": student}, batches_of(tokenizer, texts, 16))
    """
    for model in models.values():
        model.eval()
    timings: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(warmup + repeats):
        batch = batches[round_ % len(batches)]
        for name, model in models.items():
            inputs = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(**inputs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if round_ >= warmup:
                timings[name].append((time.perf_counter() - start) * 1000)
    return {name: {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
                   "threads": torch.get_num_threads()} for name, t in timings.items()}
