"""The one exception type for mistakes in a user's input (files, columns, flags, configs)."""

__all__ = ["InputError"]


class InputError(ValueError):
    """A problem with what the user gave us, explained in one line that names the culprit.

    Recipes catch it at the top (see `hfopt.run.recipe_main`) and print the message alone, without a
    traceback, so a user sees e.g.::

        error: train_file data/train.csv has no column 'label'; columns found: text, sentiment
    """
