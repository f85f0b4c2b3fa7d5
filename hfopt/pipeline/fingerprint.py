"""Fingerprints of what produced a pipeline stage: the input model's content, the stage's settings, the data files'
content and the library versions. Equal fingerprints: the stage on disk is the one this run would make.

Example::

    fingerprint({"previous": source_fingerprint("teacher/"), "stage": "prune_heads", "amount": 0.4})
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..run import library_versions, path_fingerprint

__all__ = [
    "fingerprint",
    "library_versions",
    "model_fingerprint",
    "pipeline_source",
    "source_fingerprint",
]  # library_versions: hfopt.run's


def fingerprint(parts: dict[str, Any]) -> str:
    """sha256 of a JSON mapping (keys sorted), shortened to 16 hex digits."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_fingerprint(source: str | os.PathLike | None) -> str | None:
    """The content fingerprint of a local file or model folder (a folder replaced under the same path is a new
    input); for anything else (a hub id), the name itself."""
    if source is None:
        return None
    if Path(source).exists():
        return path_fingerprint(source)
    return f"name:{source}"


def pipeline_source(model_dir: str, tokenizer_name: str | None) -> str:
    """The first link of every stage's fingerprint: the model folder's content and its tokenizer's (a local folder
    by content, wherever it is named from; a hub id by name). `hfopt compress` and `hfopt optimize` agree on it,
    so that a pipeline remade from a search's pipeline.yaml finds the search's stages."""
    return fingerprint({"model": source_fingerprint(model_dir), "tokenizer": source_fingerprint(tokenizer_name)})


def model_fingerprint(model) -> str:
    """The fingerprint of a model in memory: its config and every tensor's bytes."""
    import torch

    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if isinstance(tensor, torch.Tensor) and tensor.layout == torch.strided and not tensor.is_quantized:
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
