"""Training strategies as TrainerCallbacks that work in any `transformers.Trainer(callbacks=[...])`, recipe or
not, and `apply_strategies`, which switches them on from `StrategyArguments`.

Example::

    from hfopt.callbacks import EarlyStoppingCallback, LossWatchdogCallback
    trainer = Trainer(..., callbacks=[EarlyStoppingCallback(early_stopping_patience=2, target=0.95),
                                      LossWatchdogCallback(action="skip")])
"""

from .early_stopping import EarlyStoppingCallback
from .freezing import LayerFreezingCallback, layerwise_lr_decay_param_groups
from .regularization import L1RegularizationCallback
from .strategies import apply_strategies, strategy_callbacks
from .throughput import ThroughputCallback, add_callback_first
from .watchdog import LossWatchdogCallback

__all__ = [
    "EarlyStoppingCallback",
    "L1RegularizationCallback",
    "LayerFreezingCallback",
    "LossWatchdogCallback",
    "ThroughputCallback",
    "add_callback_first",
    "apply_strategies",
    "layerwise_lr_decay_param_groups",
    "strategy_callbacks",
]
