"""Layer freezing, gradual unfreezing (ULMFiT-style) and layer-wise learning-rate decay."""

from __future__ import annotations

import logging
import re

from torch import nn
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ..architectures import is_embedding, transformer_blocks

logger = logging.getLogger(__name__)

__all__ = ["LayerFreezingCallback", "layerwise_lr_decay_param_groups"]


class LayerFreezingCallback(TrainerCallback, ExportableState):
    """Freeze the embeddings and/or the bottom `num_frozen_layers` blocks (and parameters matching `patterns`),
    then optionally unfreeze one block every N steps or epochs, top-down, the embeddings last.

    Parameters are frozen in `on_train_begin`, after Trainer built its optimizer, so every parameter is in the
    optimizer and really trains once unfrozen (a frozen parameter has no gradient and the optimizer skips it).
    Which blocks are frozen follows from the global step or epoch, so a resumed run freezes the same ones.
    Under DDP, set `ddp_find_unused_parameters=True`.

    Example::

        Trainer(..., callbacks=[LayerFreezingCallback(freeze_embeddings=True, num_frozen_layers=6,
                                                      unfreeze_every_n_epochs=1)])
    """

    def __init__(
        self,
        freeze_embeddings: bool = False,
        num_frozen_layers: int = 0,
        patterns: list[str] | None = None,
        unfreeze_every_n_steps: int | None = None,
        unfreeze_every_n_epochs: int | None = None,
    ):
        if unfreeze_every_n_steps and unfreeze_every_n_epochs:
            raise ValueError("give unfreeze_every_n_steps or unfreeze_every_n_epochs, not both")
        self.freeze_embeddings = freeze_embeddings
        self.num_frozen_layers = num_frozen_layers
        self.patterns = list(patterns or [])
        self.unfreeze_every_n_steps = unfreeze_every_n_steps
        self.unfreeze_every_n_epochs = unfreeze_every_n_epochs
        self._groups: list[list[nn.Parameter]] = []  # unfreezing order: top frozen block first, embeddings last
        self._pattern_params: list[nn.Parameter] = []  # frozen for the whole run
        self._unfrozen = -1

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if args.parallel_mode.value == "distributed" and not args.ddp_find_unused_parameters:
            raise ValueError("LayerFreezingCallback under DDP needs --ddp_find_unused_parameters true")
        blocks = transformer_blocks(model)
        if self.num_frozen_layers > len(blocks):
            raise ValueError(f"num_frozen_layers={self.num_frozen_layers} but the model has {len(blocks)} blocks")
        block_names = [name for name, _ in blocks[: self.num_frozen_layers]]
        groups = [
            [p for n, p in model.named_parameters() if n.startswith(name + ".")] for name in reversed(block_names)
        ]
        if self.freeze_embeddings:
            groups.append([p for n, p in model.named_parameters() if is_embedding(n)])
        self._groups = [g for g in groups if g]
        self._pattern_params = [
            p for n, p in model.named_parameters() if any(re.search(pattern, n) for pattern in self.patterns)
        ]
        for p in self._pattern_params:
            p.requires_grad_(False)
        self._unfrozen = -1
        self._apply(state)
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        logger.info(
            "LayerFreezingCallback: %s of %s parameters frozen",
            f"{frozen:,}",
            f"{sum(p.numel() for p in model.parameters()):,}",
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.unfreeze_every_n_steps:
            self._apply(state)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.unfreeze_every_n_epochs:
            self._apply(state)

    def num_unfrozen(self, state) -> int:
        """How many of the frozen groups are unfrozen at this point of training."""
        if self.unfreeze_every_n_steps:
            return state.global_step // self.unfreeze_every_n_steps
        if self.unfreeze_every_n_epochs:
            return int(round(state.epoch or 0)) // self.unfreeze_every_n_epochs
        return 0

    def _apply(self, state) -> None:
        count = min(self.num_unfrozen(state), len(self._groups))
        if count == self._unfrozen:
            return
        for i, group in enumerate(self._groups):
            for p in group:
                p.requires_grad_(i < count)
        if self._unfrozen >= 0 and count > self._unfrozen:
            logger.info(
                "Gradual unfreezing at step %d: %d of %d frozen groups now train",
                state.global_step,
                count,
                len(self._groups),
            )
        self._unfrozen = count

    def state(self) -> dict:
        return {
            "args": {
                "freeze_embeddings": self.freeze_embeddings,
                "num_frozen_layers": self.num_frozen_layers,
                "patterns": self.patterns,
                "unfreeze_every_n_steps": self.unfreeze_every_n_steps,
                "unfreeze_every_n_epochs": self.unfreeze_every_n_epochs,
            },
            "attributes": {},
        }


def layerwise_lr_decay_param_groups(
    model: nn.Module, learning_rate: float, decay: float, weight_decay: float = 0.0
) -> list[dict]:
    """Optimizer parameter groups with layer-wise learning-rate decay: the top block (and the head) get
    `learning_rate`, each block below gets `decay` times the one above, the embeddings decay^(L) of it.

    Biases and norm weights get no weight decay, as in Trainer.

    Example::

        groups = layerwise_lr_decay_param_groups(model, learning_rate=5e-5, decay=0.8, weight_decay=0.01)
        Trainer(..., optimizers=(torch.optim.AdamW(groups), None))
    """
    blocks = transformer_blocks(model)
    depth = len(blocks)

    def scale(name: str) -> float:
        for i, (block_name, _) in enumerate(blocks):
            if name.startswith(block_name + "."):
                return decay ** (depth - 1 - i)
        return decay**depth if is_embedding(name) else 1.0

    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "norm" in name.lower()
        key = (learning_rate * scale(name), 0.0 if no_decay else weight_decay)
        groups.setdefault(key, []).append(p)
    # highest learning rate first: Trainer logs the first group's, which is then the base learning rate
    ordered = sorted(groups.items(), key=lambda item: -item[0][0])
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in ordered]
