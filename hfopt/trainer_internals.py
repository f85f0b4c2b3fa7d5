"""The one place hfopt reaches into transformers' private `Trainer` API, with the transformers versions it is
tested against.

Everything else hfopt changes in a Trainer goes through public hooks that transformers documents for
subclassing (`get_train_dataloader`, `create_scheduler`, `create_model_card`, callbacks). Two needs have no
public hook:

- `_get_eval_sampler`: transformers applies `train_sampling_strategy="group_by_length"` to evaluation and
  `predict` too, which returns predictions in another order than the rows (`hfopt.data.evaluate_in_dataset_order`).
- `_remove_unused_columns`: a custom training DataLoader (`hfopt.data.use_length_batches`) drops the columns
  the model does not take, as Trainer's own DataLoaders do.

`tests/test_trainer_internals.py` pins each method's parameters and the behaviour that makes the patch
needed, so a transformers release that changes either fails there, not in a user's run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

__all__ = ["PRIVATE_METHODS", "TESTED_TRANSFORMERS", "private_method", "replace_private_method"]

TESTED_TRANSFORMERS = ">=5.0,<6"  # as pyproject.toml pins it
# each private Trainer method hfopt uses -> the parameters it is called with
PRIVATE_METHODS: dict[str, tuple[str, ...]] = {
    "_get_eval_sampler": ("eval_dataset",),
    "_remove_unused_columns": ("dataset", "description"),
}


def _checked(trainer, name: str) -> Callable:
    import transformers

    method = getattr(trainer, name, None)
    parameters = tuple(inspect.signature(method).parameters) if callable(method) else None
    if name not in PRIVATE_METHODS or parameters != PRIVATE_METHODS[name]:
        raise RuntimeError(
            f"Trainer.{name} is not what hfopt expects (parameters {parameters}, expected "
            f"{PRIVATE_METHODS.get(name)}): hfopt is tested with transformers{TESTED_TRANSFORMERS}, this is "
            f"{transformers.__version__}"
        )
    return method


def private_method(trainer, name: str) -> Callable:
    """The bound private method `name` of `trainer`, after checking it still takes the parameters hfopt
    calls it with."""
    return _checked(trainer, name)


def replace_private_method(trainer, name: str, replacement: Callable) -> Callable:
    """Replace the private method `name` on this `trainer` instance (its class is left alone) with
    `replacement`, which takes the same parameters; returns the original bound method."""
    original = _checked(trainer, name)
    setattr(trainer, name, replacement)
    return original
