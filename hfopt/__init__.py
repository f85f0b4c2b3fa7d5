"""hfopt: fine-tuning and compression recipes and plug-ins for the Hugging Face Trainer."""

from .errors import InputError
from .quiet import is_verbose, quiet_third_party

quiet_third_party(verbose=is_verbose())  # before any hfopt module imports transformers (and with it torchao)

__version__ = "0.2.0"  # the one place the version is written (pyproject.toml reads it)


def __getattr__(name):  # the trainer classes import torch and transformers: load them on first use
    if name in ("DistillationTrainer", "DistillationTrainingArguments"):
        from . import distillation

        return getattr(distillation, name)
    raise AttributeError(f"module 'hfopt' has no attribute {name!r}")


__all__ = ["DistillationTrainer", "DistillationTrainingArguments", "InputError", "__version__"]
