"""Compression while training: what `CompressionArguments` switch on for a recipe's model and Trainer.

Example::

    model = apply_model_compression(load_model(...), compression_args)     # in model_init: weight sharing
    trainer = Trainer(model=model, ...)
    apply_training_compression(trainer, compression_args)                   # gradual pruning, QAT
"""

from __future__ import annotations

from ..args import CompressionArguments
from ..errors import InputError
from .gradual import GradualPruningCallback
from .qat import QuantizationAwareTrainingCallback, qat_layers
from .sharing import share_layers

__all__ = ["apply_model_compression", "apply_training_compression"]

QAT_DIR = "int8"  # the subfolder of output_dir that gets the quantization-aware trained int8 model


def apply_model_compression(model, compression_args: CompressionArguments):
    """Compress a freshly loaded model before its Trainer is built, in place, and return it: weight sharing
    (`--share_layers N`, `--share_layers_init`). Call it where the model is made (a recipe's `model_init`), so
    every hyperparameter-search trial gets it too.

    Example::

        def model_init(trial=None):
            return apply_model_compression(load_model(...), compression_args)
    """
    c = compression_args
    if c.share_layers:
        share_layers(model, num_groups=c.share_layers, init=c.share_layers_init)
    return model


def apply_training_compression(trainer, compression_args: CompressionArguments) -> None:
    """Add gradual magnitude pruning (`--gradual_pruning_sparsity`) and quantization-aware training (`--qat int8`:
    the int8 model is written to output_dir/int8 by the main process at the end of training) to a recipe's
    Trainer.

    Example::

        apply_training_compression(trainer, CompressionArguments(qat="int8"))
        trainer.train()                                  # output_dir/int8 then holds the int8 model
    """
    c = compression_args
    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    if c.gradual_pruning_sparsity:
        if sharded:
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
    if c.qat:
        if sharded:
            raise InputError(
                "quantization-aware training reads whole weight matrices, which DeepSpeed and FSDP shard: use "
                "--qat with DDP or one process"
            )
        if hasattr(trainer.model, "peft_config"):
            raise InputError("--qat trains the full weights that int8 quantizes; it does not combine with --use_peft")
        if trainer.model is not None:
            qat_layers(trainer.model)  # a model it cannot train fails here, before training
        trainer.add_callback(QuantizationAwareTrainingCallback(int8_dir=QAT_DIR))
