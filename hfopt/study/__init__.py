"""Strategy studies: run a recipe's variants side by side (`hfopt compare`) and search hyperparameters.

Example::

    from hfopt.study import search_hyperparameters
"""

from .search import DEFAULT_SPACE, check_search_space, search_hyperparameters

__all__ = ["DEFAULT_SPACE", "check_search_space", "search_hyperparameters"]
