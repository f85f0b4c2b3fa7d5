"""What the ONNX modules share: the onnx extra's check, quiet exporters, ONNX Runtime sessions and their inputs."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError

__all__ = ["EXPORT_RECORD", "require_onnx"]

EXPORT_RECORD = "onnx_export.json"


def require_onnx() -> None:
    """Raise an InputError naming the missing package if the onnx extra is not installed."""
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise InputError(f'the onnx stages need {name}: pip install "hfopt[onnx]"') from None


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Please consider to run pre-processing", "torchvision is not"))


@contextlib.contextmanager
def _quiet():
    """Silence what the exporter and the quantizer print about themselves (missing torchvision, renamed axes,
    deprecations, the advice to pre-process a graph that needs none), nothing else."""
    noise = _DropNoise()
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx._internal.exporter._registration")]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.(onnx|_dynamo)")
        warnings.filterwarnings("ignore", category=FutureWarning)
        for logger_ in loggers:
            logger_.addFilter(noise)
        try:
            yield
        finally:
            for logger_ in loggers:
                logger_.removeFilter(noise)


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over the real tokens (what `generate` passes a decoder-only model; left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0) * attention_mask.long()


def _session(file: Path, threads: int | None = None, spinning: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])


def _read_record(path: Path) -> dict:
    try:
        return json.loads((path / EXPORT_RECORD).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path} is not a folder written by export_onnx ({EXPORT_RECORD}: {err})") from None


def _feed(names: list[str], batch: dict) -> dict[str, np.ndarray]:
    """ONNX Runtime inputs from a batch (torch tensors or numpy arrays), the optional ones filled in as the
    PyTorch model would: no mask = all tokens, token types 0, positions 0, 1, 2, ..."""

    def array(value):
        value = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        return value.astype(np.int64) if value.dtype.kind in "iub" else value

    given = {k: array(v) for k, v in batch.items() if v is not None}
    if "token_type_ids" not in names and given.get("token_type_ids", np.zeros(1)).any():
        raise ValueError("this ONNX model takes no token_type_ids, and the batch has non-zero ones")
    first = given.get("input_ids", given.get("decoder_input_ids"))
    defaults = {
        "attention_mask": lambda: np.ones_like(first),
        "token_type_ids": lambda: np.zeros_like(first),
        "position_ids": lambda: np.broadcast_to(np.arange(first.shape[1], dtype=np.int64), first.shape).copy(),
    }
    feed = {}
    for name in names:
        if name not in given and name not in defaults:
            raise ValueError(f"the ONNX model needs the input '{name}'")
        feed[name] = given[name] if name in given else defaults[name]()
    return feed
