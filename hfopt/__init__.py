"""hfopt: fine-tuning and compression recipes and plug-ins for the Hugging Face Trainer."""

__version__ = "0.1.0"

from .errors import InputError  # noqa: E402


def __getattr__(name):  # the trainer classes import torch and transformers: load them on first use
    if name in ("DistillationTrainer", "DistillationTrainingArguments"):
        from . import distillation

        return getattr(distillation, name)
    raise AttributeError(f"module 'hfopt' has no attribute {name!r}")


__all__ = ["DistillationTrainer", "DistillationTrainingArguments", "InputError", "__version__"]
