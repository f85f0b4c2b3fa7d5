"""The one exception type for mistakes in a user's input (files, columns, flags, configs)."""

__all__ = ["InputError", "raised_in"]


class InputError(ValueError):
    """A problem with what the user gave us, explained in one line that names the culprit.

    Recipes catch it at the top (see `hfopt.run.recipe_main`) and print the message alone, without a
    traceback, so a user sees e.g.::

        error: train_file data/train.csv has no column 'label'; columns found: text, sentiment
    """


def raised_in(err: BaseException, *packages: str) -> bool:
    """Whether the innermost Python frame of `err`'s traceback belongs to one of `packages` (top-level names):
    a library we called refusing what the user gave it, which a caller may turn into one InputError line. An
    error raised in hfopt's own code, or in code it does not expect there, is a bug and keeps its traceback.

    Example::

        except ValueError as err:
            if not raised_in(err, "transformers"):
                raise
            raise InputError(f"...: {err}") from None
    """
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    return module.split(".")[0] in packages
