"""ONNX stages: one export built into fp32, dynamic int8 and static int8 folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from torch import nn

from ...errors import InputError
from .export import SAMPLE_TEXTS, TOLERANCE, _graphs, _prepare, _torch_export, _write_folder
from .quantize import quantize_onnx

__all__ = ["ONNX_STAGES", "export_stages"]

ONNX_STAGES = ("onnx", "onnx_int8", "onnx_int8_static")


def export_stages(
    model: nn.Module,
    tokenizer,
    names,
    folder: str | os.PathLike,
    task: str | None = None,
    calibration_batches=None,
) -> dict[str, Path]:
    """Export `model` once and build the named ONNX stages in `folder/<name>`: `onnx` (fp32, fused for ONNX
    Runtime), `onnx_int8` (dynamic int8 of the unfused graph: faster than of the fused one at batch 16, and
    alike at batch 1), `onnx_int8_static` (static int8 of the fused graph, calibrated on `calibration_batches`).

    Example::

        folders = export_stages(model, tokenizer, ONNX_STAGES, "out/onnx", calibration_batches=batches)
        stages = {name: load_onnx(path, spinning=False) for name, path in folders.items()}
    """
    unknown = sorted(set(names) - set(ONNX_STAGES))
    if unknown:
        raise InputError(f"unknown ONNX stages {unknown}: choose from {', '.join(ONNX_STAGES)}")
    model, task = _prepare(model, task)
    folder = Path(folder)
    graphs = _graphs(model, tokenizer, task, SAMPLE_TEXTS)
    for graph in graphs:
        _torch_export(graph)
    stages = {}
    if "onnx_int8" in names:
        plain = _write_folder(model, tokenizer, task, graphs, folder / ".onnx_plain", False, TOLERANCE)
        stages["onnx_int8"] = quantize_onnx(plain, folder / "onnx_int8", "dynamic")
        shutil.rmtree(plain)
    if "onnx" in names or "onnx_int8_static" in names:
        fused = _write_folder(model, tokenizer, task, graphs, folder / "onnx", True, TOLERANCE)
        if "onnx_int8_static" in names:
            static = quantize_onnx(fused, folder / "onnx_int8_static", "static", calibration_batches)
            stages["onnx_int8_static"] = static
        if "onnx" in names:
            stages["onnx"] = fused
        else:
            shutil.rmtree(fused)
    return {name: stages[name] for name in ONNX_STAGES if name in stages}
