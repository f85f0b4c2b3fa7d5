"""Training throughput in the Trainer logs: samples/s, non-padding tokens/s, estimated MFU, peak memory."""

from __future__ import annotations

import time

import torch
from transformers import TrainerCallback

from ..hardware import peak_memory_mb

__all__ = ["ThroughputCallback", "add_callback_first"]

# Dense bf16/fp16 tensor-core peak FLOP/s per device, by a substring of torch.cuda.get_device_name().
KNOWN_PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
    "V100": 125e12,
    "T4": 65e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}


class ThroughputCallback(TrainerCallback):
    """At every logging step, add to the logs (hence to TensorBoard/W&B and trainer_state.json):

    `throughput_samples_per_second`, `throughput_tokens_per_second` (non-padding tokens, from the attention
    mask), `mfu` (≈ 6 × parameters × tokens / time / peak FLOP/s, when the peak is given or known for the
    GPU) and `peak_memory_mb` (CUDA max allocated, or the process's peak RSS on CPU). Figures cover all
    processes (this process's count × number of processes).

    Integration callbacks (TensorBoard, W&B) run before user callbacks in transformers; register this one
    with `add_callback_first(trainer, ThroughputCallback())` so they receive its figures.

    Example::

        trainer = Trainer(...)
        add_callback_first(trainer, ThroughputCallback(peak_flops=989e12))
    """

    def __init__(self, peak_flops: float | None = None):
        self.peak_flops = peak_flops
        self._samples = 0
        self._tokens = 0
        self._since = None
        self._hook = None
        self._num_parameters = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._num_parameters = sum(p.numel() for p in model.parameters())
        if self._hook is None:
            self._hook = model.register_forward_pre_hook(self._count, with_kwargs=True)
        if self.peak_flops is None and torch.cuda.is_available():
            name = torch.cuda.get_device_name()
            self.peak_flops = next((v for k, v in KNOWN_PEAK_FLOPS.items() if k in name), None)
        self._reset()

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _reset(self):
        self._samples, self._tokens, self._since = 0, 0, time.perf_counter()

    def _count(self, module, args, kwargs):
        if not module.training:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if isinstance(ids, torch.Tensor):
            self._samples += ids.shape[0]
            self._tokens += int(mask.sum()) if isinstance(mask, torch.Tensor) else ids.numel()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or self._since is None:
            return
        seconds = max(time.perf_counter() - self._since, 1e-9)
        world = max(args.world_size, 1)
        figures = {
            "throughput_samples_per_second": self._samples * world / seconds,
            "throughput_tokens_per_second": self._tokens * world / seconds,
            "peak_memory_mb": peak_memory_mb(),
        }
        if self.peak_flops:
            figures["mfu"] = 6 * self._num_parameters * self._tokens / seconds / self.peak_flops
        logs.update(figures)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(figures)
        self._reset()


def add_callback_first(trainer, callback) -> None:
    """Register callback right after Trainer's flow callback, before the reporting integrations, so that what
    it adds to the logs reaches TensorBoard and W&B."""
    trainer.callback_handler.callbacks.insert(1, callback)
