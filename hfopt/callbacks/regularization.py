"""L1 regularisation applied to gradients, equal to adding λ·Σ|w| to the loss."""

from __future__ import annotations

import torch
from transformers import TrainerCallback

__all__ = ["L1RegularizationCallback"]


class L1RegularizationCallback(TrainerCallback):
    """Add `l1_lambda · sign(w)` to the gradient of every weight matrix before each optimizer step: the gradient
    of `l1_lambda · Σ|w|` added to the (accumulated, all-process) loss. Biases and norm weights (1-D
    parameters) are left alone unless `include_1d=True`; frozen parameters are skipped.

    It runs after gradient clipping, so the L1 term itself is never clipped. Gradients sharded by DeepSpeed
    ZeRO or FSDP are not visible as `p.grad`: use it with DDP or one device.

    Example::

        Trainer(..., callbacks=[L1RegularizationCallback(l1_lambda=1e-5)])
    """

    def __init__(self, l1_lambda: float, include_1d: bool = False):
        if l1_lambda < 0:
            raise ValueError(f"l1_lambda must be ≥ 0, got {l1_lambda}")
        self.l1_lambda = l1_lambda
        self.include_1d = include_1d

    @torch.no_grad()
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self.l1_lambda:
            return
        for p in model.parameters():
            if p.grad is not None and (self.include_1d or p.ndim >= 2):
                p.grad.add_(torch.sign(p), alpha=self.l1_lambda)
