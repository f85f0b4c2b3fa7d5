"""The model a pipeline starts from: any model folder (plain, pruned, shared or quantized by hfopt), its tokenizer
and its task.

Example::

    model, tokenizer, task = load_source("runs/teacher")        # task: "classification"
"""

from __future__ import annotations

__all__ = ["load_source"]


def load_source(model_dir: str, task: str = "auto", tokenizer_name: str | None = None):
    """(model, tokenizer, task) of a model folder, on CPU in eval mode; `task` "auto" reads it from the config."""
    from transformers import AutoConfig, AutoTokenizer

    from ..compression.io import CompressedFolder
    from ..compression.tasks import detect_task, task_auto_class
    from ..models import check_model_source, check_tokenizer_files, load_model_folder

    check_model_source(model_dir, "model_dir")
    task = detect_task(AutoConfig.from_pretrained(model_dir)) if task == "auto" else task
    tokenizer_source = tokenizer_name or model_dir
    check_tokenizer_files(tokenizer_source, "tokenizer_name" if tokenizer_name else "model_dir")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    model = load_model_folder(model_dir, task_auto_class(task), role="model_dir", compressed=CompressedFolder)
    return model.cpu().eval(), tokenizer, task
