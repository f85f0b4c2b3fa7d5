"""Gradual magnitude pruning during fine-tuning, on the cubic schedule of Zhu & Gupta (2017)."""

from __future__ import annotations

import logging

import torch
from torch.nn.utils import prune
from transformers import TrainerCallback

from ..architectures import TASK_HEAD_PATTERNS, linear_layers
from .pruning import check_amount

logger = logging.getLogger(__name__)

__all__ = ["GradualPruningCallback"]


class GradualPruningCallback(TrainerCallback):
    """Raise the global sparsity of the linear weights from 0 to `target_sparsity` between `start_step` and
    `end_step`, pruning every `frequency` steps on the cubic schedule s_t = s_f·(1 − (1 − (t − t₀)/(t₁ − t₀))³).

    The smallest-magnitude weights are zeroed in place (torch.nn.utils.prune, made permanent at once), and the
    zeros are re-applied after every optimizer step, so the weights are always the pruned ones: checkpoints
    and the final model reload with plain `from_pretrained`, and a resumed run finds its masks in the zeros.
    Embeddings, norms and the task head are excluded by default. `end_step=None` reaches the target at 3/4 of
    training (the rest of training fine-tunes the pruned weights).

    Example::

        Trainer(..., callbacks=[GradualPruningCallback(target_sparsity=0.8, start_step=100, end_step=1000,
                                                       frequency=50)])
    """

    def __init__(
        self,
        target_sparsity: float,
        start_step: int = 0,
        end_step: int | None = 1000,
        frequency: int = 100,
        exclude=TASK_HEAD_PATTERNS,
    ):
        check_amount(target_sparsity, "target_sparsity")
        if start_step < 0 or (end_step is not None and end_step <= start_step) or frequency < 1:
            raise ValueError("need 0 ≤ start_step < end_step and frequency ≥ 1")
        self.target_sparsity, self.start_step, self.end_step, self.frequency = (
            target_sparsity,
            start_step,
            end_step,
            frequency,
        )
        self.exclude = exclude
        self._layers: list = []
        self._masks: dict = {}

    def sparsity_at(self, step: int) -> float:
        """The scheduled sparsity after `step` optimizer steps (constant between pruning steps)."""
        if step < self.start_step:
            return 0.0
        pruned_at = min(self.start_step + (step - self.start_step) // self.frequency * self.frequency, self.end_step)
        if step >= self.end_step:
            pruned_at = self.end_step
        progress = (pruned_at - self.start_step) / (self.end_step - self.start_step)
        return self.target_sparsity * (1 - (1 - progress) ** 3)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.end_step is None:
            self.end_step = max(self.start_step + 1, int(0.75 * state.max_steps))
        self._layers = [module for _, module in linear_layers(model, self.exclude)]
        self._masks = {module: module.weight.detach() != 0 for module in self._layers}  # zeros of a resumed run
        self._prune_to(self.sparsity_at(state.global_step))

    @torch.no_grad()
    def on_optimizer_step(self, args, state, control, **kwargs):
        for module, mask in self._masks.items():
            module.weight.mul_(mask)

    def on_step_end(self, args, state, control, **kwargs):
        self._prune_to(self.sparsity_at(state.global_step))

    def current_sparsity(self) -> float:
        total = sum(m.weight.numel() for m in self._layers)
        return float(sum((m.weight == 0).sum() for m in self._layers)) / max(total, 1)

    def _prune_to(self, target: float) -> None:
        total = sum(m.weight.numel() for m in self._layers)
        count = int(round(target * total))
        if count <= round(self.current_sparsity() * total):
            return
        prune.global_unstructured(
            [(m, "weight") for m in self._layers], pruning_method=prune.L1Unstructured, amount=count
        )
        for module in self._layers:
            prune.remove(module, "weight")
        self._masks = {module: module.weight.detach() != 0 for module in self._layers}
        logger.info("GradualPruning: sparsity %.3f", self.current_sparsity())
