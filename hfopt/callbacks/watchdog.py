"""Catch NaN/Inf losses and gradients, and loss spikes, before they reach the weights."""

from __future__ import annotations

import logging
import math
from collections import deque
from statistics import median

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)


__all__ = ["LossWatchdogCallback"]


class LossWatchdogCallback(TrainerCallback):
    """Watch every optimizer step: a NaN/Inf training loss or gradient norm, or a loss above
    `spike_factor` × the running median of the last `window` steps, triggers `action`:

    - `"skip"`: the update is dropped (gradients cleared before the optimizer step) and training goes on;
    - `"stop"`: the update is dropped and training stops with a log line; the weights stay those of the last
      good step, so the last checkpoint (and the model the recipe saves) are loadable.

    The loss is read from the model's outputs (a forward hook, training mode only), averaged over the
    accumulation steps. Under DDP the decision is shared by all processes (any rank's trigger counts).
    `events` lists (step, reason) of every trigger.

    Example::

        Trainer(..., callbacks=[LossWatchdogCallback(action="skip", spike_factor=5.0)])
    """

    def __init__(
        self, action: str = "stop", spike_factor: float | None = None, window: int = 50, min_history: int = 10
    ):
        if action not in ("stop", "skip"):
            raise ValueError(f"action must be 'stop' or 'skip', got {action!r}")
        self.action = action
        self.spike_factor = spike_factor
        self.history: deque[float] = deque(maxlen=window)
        self.min_history = min_history
        self.events: list[tuple[int, str]] = []
        self._losses: list[float] = []
        self._hook = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self._hook is None:
            self._hook = model.register_forward_hook(self._capture_loss)

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _capture_loss(self, module, inputs, outputs):
        loss = outputs.get("loss") if isinstance(outputs, dict) else getattr(outputs, "loss", None)
        if module.training and loss is not None:
            self._losses.append(float(loss.detach().float().mean()))

    @torch.no_grad()
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        loss = sum(self._losses) / len(self._losses) if self._losses else None
        self._losses.clear()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        grad_norm = (
            float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))
            if grads
            else 0.0
        )
        reason = None
        if loss is not None and not math.isfinite(loss):
            reason = f"loss is {loss}"
        elif not math.isfinite(grad_norm):
            reason = f"gradient norm is {grad_norm}"
        elif (
            self.spike_factor
            and loss is not None
            and len(self.history) >= self.min_history
            and loss > self.spike_factor * median(self.history)
        ):
            reason = f"loss {loss:.4g} > {self.spike_factor:g} × running median {median(self.history):.4g}"
        if _any_rank(reason is not None, args.device):
            reason = reason or "another process saw a bad step"
            self.events.append((state.global_step + 1, reason))
            model.zero_grad(set_to_none=True)  # the optimizer skips parameters without a gradient
            if self.action == "stop":
                logger.error(
                    "LossWatchdog: stopping at step %d: %s. Weights are those of the last good step.",
                    state.global_step + 1,
                    reason,
                )
                control.should_training_stop = True
            else:
                logger.warning("LossWatchdog: skipping the update of step %d: %s", state.global_step + 1, reason)
        elif loss is not None:
            self.history.append(loss)


def _any_rank(flag: bool, device) -> bool:
    """True on every process if flag is True on any (a no-op without torch.distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return bool(tensor.item())
