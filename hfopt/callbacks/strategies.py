"""Switch on the strategies of `StrategyArguments` for a Trainer: callbacks, schedule, layer-wise learning
rates and training-data augmentation. Recipes call `apply_strategies` once, after building their Trainer.

Example::

    trainer = Trainer(...)
    apply_strategies(trainer, strategy_args, tokenizer)
    trainer.train()
"""

from __future__ import annotations

import logging

from ..architectures import transformer_blocks
from ..args import StrategyArguments
from ..augmentation import augment_train_dataset
from ..data import evaluate_in_dataset_order, use_length_batches
from ..errors import InputError
from ..schedules import attach_schedule
from .early_stopping import EarlyStoppingCallback
from .freezing import LayerFreezingCallback, layerwise_lr_decay_param_groups
from .regularization import L1RegularizationCallback
from .throughput import ThroughputCallback, add_callback_first
from .watchdog import LossWatchdogCallback

logger = logging.getLogger(__name__)

__all__ = ["apply_strategies", "strategy_callbacks"]


def strategy_callbacks(strategy_args: StrategyArguments) -> list:
    """The hfopt callbacks that strategy_args switch on (ThroughputCallback aside: see apply_strategies)."""
    s = strategy_args
    callbacks = []
    if s.early_stopping_patience is not None or s.early_stopping_target is not None or s.max_train_time:
        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=s.early_stopping_patience,
                min_delta=s.early_stopping_min_delta,
                relative=s.early_stopping_relative,
                target=s.early_stopping_target,
                max_train_time=s.max_train_time,
            )
        )
    if s.freeze_embeddings or s.num_frozen_layers or s.freeze_patterns:
        callbacks.append(
            LayerFreezingCallback(
                freeze_embeddings=s.freeze_embeddings,
                num_frozen_layers=s.num_frozen_layers,
                patterns=s.freeze_patterns,
                unfreeze_every_n_steps=s.unfreeze_every_n_steps,
                unfreeze_every_n_epochs=s.unfreeze_every_n_epochs,
            )
        )
    if s.l1_lambda:
        callbacks.append(L1RegularizationCallback(s.l1_lambda))
    if s.watchdog:
        callbacks.append(LossWatchdogCallback(action=s.watchdog, spike_factor=s.watchdog_spike_factor))
    return callbacks


def _check_with_model(trainer, s: StrategyArguments) -> None:
    """The checks that need the model and the launch setting, before training starts."""
    if s.num_frozen_layers:
        blocks = len(transformer_blocks(trainer.model))
        if s.num_frozen_layers > blocks:
            raise InputError(f"num_frozen_layers is {s.num_frozen_layers} but the model has {blocks} blocks")
    freezing = s.freeze_embeddings or s.num_frozen_layers or s.freeze_patterns
    if freezing and trainer.args.world_size > 1 and not trainer.args.ddp_find_unused_parameters:
        raise InputError("layer freezing with several processes needs --ddp_find_unused_parameters true")
    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    for name, on in (("l1_lambda", s.l1_lambda), ("watchdog", s.watchdog)):
        if on and sharded:
            raise InputError(
                f"{name} reads each parameter's gradient, which DeepSpeed and FSDP shard: use it with "
                "DDP or one process"
            )


def apply_strategies(trainer, strategy_args: StrategyArguments, tokenizer=None) -> None:
    """Add the callbacks, schedule, layer-wise learning-rate groups and training-data augmentation that
    strategy_args ask for to a Trainer built by a recipe (or by you)."""
    s = strategy_args
    _check_with_model(trainer, s)
    for callback in strategy_callbacks(s):
        trainer.add_callback(callback)
    if s.log_throughput:
        add_callback_first(trainer, ThroughputCallback(peak_flops=s.peak_flops))
    if s.lr_schedule:
        kwargs = {"gamma": s.lr_decay_gamma}
        if s.lr_schedule == "step":
            kwargs["step_size"] = s.lr_decay_step_size
        attach_schedule(trainer, s.lr_schedule, **kwargs)
    if s.layerwise_lr_decay is not None:
        optimizer_cls, optimizer_kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, trainer.model)
        optimizer_kwargs = {k: v for k, v in optimizer_kwargs.items() if k != "lr"}
        groups = layerwise_lr_decay_param_groups(
            trainer.model, trainer.args.learning_rate, s.layerwise_lr_decay, trainer.args.weight_decay
        )
        trainer.optimizer = optimizer_cls(groups, **optimizer_kwargs)
    evaluate_in_dataset_order(trainer)
    if (s.batching != "samples" or s.batch_size_warmup_steps) and trainer.train_dataset is not None:
        use_length_batches(  # before augmentation
            trainer, s.max_tokens_per_batch, s.batch_size_warmup_steps, group_by_length=s.batching == "length"
        )
    if (s.augment_deletion_prob or s.augment_swap_prob or s.augment_mask_prob) and trainer.train_dataset is not None:
        if s.augment_mask_prob and getattr(tokenizer, "mask_token_id", None) is None:
            raise InputError("augment_mask_prob needs a tokenizer with a mask token; this one has none")
        augment_train_dataset(
            trainer.train_dataset,
            tokenizer,
            s.augment_deletion_prob,
            s.augment_swap_prob,
            s.augment_mask_prob,
            seed=trainer.args.seed,
        )
