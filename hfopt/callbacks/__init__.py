"""TrainerCallbacks that work in any `transformers.Trainer(callbacks=[...])`, recipe or not.

Example::

    from hfopt.callbacks import EarlyStoppingCallback, LossWatchdogCallback
    trainer = Trainer(..., callbacks=[EarlyStoppingCallback(early_stopping_patience=2, target=0.95),
                                      LossWatchdogCallback(action="skip")])
"""

from .early_stopping import EarlyStoppingCallback
from .freezing import LayerFreezingCallback, layerwise_lr_decay_param_groups
from .pruning import GradualPruningCallback
from .regularization import L1RegularizationCallback
from .throughput import ThroughputCallback, add_callback_first
from .watchdog import LossWatchdogCallback

__all__ = [
    "EarlyStoppingCallback",
    "GradualPruningCallback",
    "L1RegularizationCallback",
    "LayerFreezingCallback",
    "LossWatchdogCallback",
    "ThroughputCallback",
    "add_callback_first",
    "layerwise_lr_decay_param_groups",
]
