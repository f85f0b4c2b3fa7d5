"""Compression while training: what `CompressionArguments` switch on for a recipe's Trainer.

Example::

    trainer = Trainer(...)
    apply_training_compression(trainer, compression_args)
"""

from __future__ import annotations

from ..args import CompressionArguments
from ..errors import InputError
from .gradual import GradualPruningCallback

__all__ = ["apply_training_compression"]


def apply_training_compression(trainer, compression_args: CompressionArguments) -> None:
    """Add gradual magnitude pruning (`--gradual_pruning_sparsity`) to a recipe's Trainer."""
    c = compression_args
    if c.gradual_pruning_sparsity:
        if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
            raise InputError(
                "gradual pruning zeroes whole weight matrices in place, which DeepSpeed and FSDP shard: "
                "use it with DDP or one process"
            )
        trainer.add_callback(
            GradualPruningCallback(
                c.gradual_pruning_sparsity,
                start_step=c.gradual_pruning_start_step,
                end_step=c.gradual_pruning_end_step,
                frequency=c.gradual_pruning_frequency,
            )
        )
