"""Switch on the strategies of `StrategyArguments` for a Trainer: callbacks, schedule, layer-wise learning
rates, augmentation, and the hyperparameter search mode. Recipes call `apply_strategies` once.

Example::

    trainer = Trainer(...)
    apply_strategies(trainer, strategy_args, tokenizer)
    trainer.train()
"""

from __future__ import annotations

import importlib.util
import logging

from .augmentation import augment_train_dataset
from .callbacks import (
    EarlyStoppingCallback,
    L1RegularizationCallback,
    LayerFreezingCallback,
    LossWatchdogCallback,
    ThroughputCallback,
    add_callback_first,
    layerwise_lr_decay_param_groups,
)
from .errors import InputError
from .schedules import SCHEDULES, attach_schedule

logger = logging.getLogger("hfopt")


def strategy_callbacks(strategy_args) -> list:
    """The hfopt callbacks that strategy_args switch on (ThroughputCallback aside: see apply_strategies)."""
    s = strategy_args
    callbacks = []
    if s.early_stopping_patience is not None or s.early_stopping_target is not None or s.max_train_time:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=s.early_stopping_patience,
                                               min_delta=s.early_stopping_min_delta, relative=s.early_stopping_relative,
                                               target=s.early_stopping_target, max_train_time=s.max_train_time))
    if s.freeze_embeddings or s.num_frozen_layers or s.freeze_patterns:
        callbacks.append(LayerFreezingCallback(freeze_embeddings=s.freeze_embeddings,
                                               num_frozen_layers=s.num_frozen_layers, patterns=s.freeze_patterns,
                                               unfreeze_every_n_steps=s.unfreeze_every_n_steps,
                                               unfreeze_every_n_epochs=s.unfreeze_every_n_epochs))
    if s.l1_lambda:
        callbacks.append(L1RegularizationCallback(s.l1_lambda))
    if s.watchdog:
        callbacks.append(LossWatchdogCallback(action=s.watchdog, spike_factor=s.watchdog_spike_factor))
    return callbacks


def check_strategies(strategy_args, training_args) -> None:
    """Fail before training on strategy settings that cannot work together."""
    s = strategy_args
    if s.lr_schedule is not None and s.lr_schedule not in SCHEDULES:
        raise InputError(f"lr_schedule '{s.lr_schedule}' is not one of {', '.join(SCHEDULES)} "
                         "(transformers' own schedules go in lr_scheduler_type)")
    if s.watchdog not in (None, "stop", "skip"):
        raise InputError(f"watchdog must be 'stop' or 'skip', got '{s.watchdog}'")
    if (s.early_stopping_patience is not None or s.early_stopping_target is not None) and (
            training_args.metric_for_best_model is None or training_args.eval_strategy == "no"):
        raise InputError("early stopping on a metric needs --metric_for_best_model and an --eval_strategy")
    for name in ("augment_deletion_prob", "augment_swap_prob", "augment_mask_prob"):
        if not 0 <= getattr(s, name) < 1:
            raise InputError(f"{name} must be in [0, 1), got {getattr(s, name)}")


def apply_strategies(trainer, strategy_args, tokenizer=None) -> None:
    """Add the callbacks, schedule, layer-wise learning-rate groups and training-data augmentation that
    strategy_args ask for to a Trainer built by a recipe (or by you)."""
    s = strategy_args
    check_strategies(s, trainer.args)
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
        groups = layerwise_lr_decay_param_groups(trainer.model, trainer.args.learning_rate, s.layerwise_lr_decay,
                                                 trainer.args.weight_decay)
        trainer.optimizer = optimizer_cls(groups, **optimizer_kwargs)
    if (s.augment_deletion_prob or s.augment_swap_prob or s.augment_mask_prob) and trainer.train_dataset is not None:
        augment_train_dataset(trainer.train_dataset, tokenizer, s.augment_deletion_prob, s.augment_swap_prob,
                              s.augment_mask_prob, seed=trainer.args.seed)


def default_hp_space(trial) -> dict:
    """The search space of the hyperparameter search mode: learning rate, warmup, weight decay, batch size."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True),
        "warmup_steps": trial.suggest_float("warmup_steps", 0.0, 0.2),
        "weight_decay": trial.suggest_float("weight_decay", 0.0, 0.1),
        "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", [8, 16, 32]),
    }


def search_hyperparameters(trainer, n_trials: int, metric: str = "eval_accuracy", direction: str = "maximize"):
    """`Trainer.hyperparameter_search` with optuna over `default_hp_space`; the Trainer must have a model_init.
    Returns transformers' BestRun."""
    if importlib.util.find_spec("optuna") is None:
        raise InputError('the hyperparameter search needs optuna: pip install "hfopt[hpo]"')
    return trainer.hyperparameter_search(direction=direction, backend="optuna", n_trials=n_trials,
                                         hp_space=default_hp_space, compute_objective=lambda m: m[metric])
