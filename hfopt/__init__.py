"""hfopt: fine-tuning and compression recipes and plug-ins for the Hugging Face Trainer."""

__version__ = "0.1.0"

from .errors import InputError  # noqa: E402

__all__ = ["InputError", "__version__"]
