"""`hfopt optimize`: the fastest (or smallest) compressed model within an accuracy budget, found by optuna over the
compression pipeline's stages (student depth, vocabulary, head/FFN/magnitude pruning, recovery, quantization,
runtime), decided on selection data and reported on an eval file the search never saw.

It drives the compression pipeline many times, so it is a room beside it, in the workflow layer.

Example::

    from hfopt.optimize import OptimizeConfig, optimize

    config = OptimizeConfig(train_file="train.tsv", eval_file="dev.tsv", max_drop=0.01, time_budget="1h")
    result = optimize("runs/teacher", config, "runs/optimized")
    result.chosen["speedup_b16"] if result.met else result.closest["loss"]
"""

from .config import OBJECTIVES, OptimizeConfig, SearchSpace, parse_duration
from .search import OptimizeResult, optimize

__all__ = ["OBJECTIVES", "OptimizeConfig", "OptimizeResult", "SearchSpace", "optimize", "parse_duration"]
