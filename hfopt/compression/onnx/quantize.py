"""quantize_onnx: int8 ONNX folders from float ones, with ONNX Runtime's quantizer (dynamic, or static calibrated)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ...errors import InputError
from ...run import folder_swap, write_json_atomic
from ._common import EXPORT_RECORD, _feed, _quiet, _read_record, _session, require_onnx

__all__ = ["quantize_onnx"]

# The MatMuls reading a GELU output (one of these ops, through a few elementwise ones) keep float weights in
# static int8: the GELU output is long-tailed, and one static scale per tensor clips it (on MiniLM/SST-2,
# quantizing them cost ~10 points of agreement with fp32).
GELU_OPS = ("Gelu", "BiasGelu", "FastGelu", "QuickGelu", "Tanh", "Erf")
ELEMENTWISE_OPS = ("Mul", "Add", "Div", "Pow", "Sqrt", "Cast")


def _ffn_down_projections(model_proto) -> list[str]:
    """The MatMuls that read a GELU output: the feed-forward down-projections. GELU is a fused op, or (GPT-2's
    tanh approximation, left unfused) a few elementwise ops around a Tanh or Erf."""
    producer = {output: node for node in model_proto.graph.node for output in node.output}

    def reads_gelu(name: str, depth: int = 0) -> bool:
        node = producer.get(name)
        if node is None or depth > 6:
            return False
        if node.op_type in GELU_OPS:
            return True
        return node.op_type in ELEMENTWISE_OPS and any(reads_gelu(i, depth + 1) for i in node.input)

    return [n.name for n in model_proto.graph.node if n.op_type == "MatMul" and reads_gelu(n.input[0])]


def _quantize_static(source: Path, target: Path, calibration_batches) -> dict:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    names = [i.name for i in _session(source, spinning=False).get_inputs()]
    feeds = [_feed(names, batch) for batch in calibration_batches]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(feeds)

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="hfopt-onnx-static-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # symbolic shapes of the dynamo exporter's graphs need auto_merge
        quant_pre_process(str(source), str(prepared), auto_merge=True, save_as_external_data=_is_large(source))
        kept_in_float = _ffn_down_projections(onnx.load(str(prepared), load_external_data=False))
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=QuantFormat.QOperator,
            op_types_to_quantize=["MatMul", "Gather"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=kept_in_float,
            calibrate_method=CalibrationMethod.MinMax,
            use_external_data_format=_is_large(source),
        )
    return {"calibration_batches": len(feeds), "float_matmuls_after_gelu": len(kept_in_float)}


def _is_large(file: Path) -> bool:
    return Path(f"{file}.data").exists()


def quantize_onnx(
    path_in: str | os.PathLike,
    path_out: str | os.PathLike,
    method: str = "dynamic",
    calibration_batches=None,
) -> Path:
    """Quantize the ONNX folder `path_in` (written by export_onnx) into `path_out` with ONNX Runtime's quantizer.

    - `dynamic`: int8 weights (one scale per output channel) of every MatMul and embedding table; activations
      quantized on the fly. Best on the unfused graph (`export_onnx(..., optimize=False)`): ONNX Runtime's
      quantizer leaves a fused attention's projections in float (MiniLM: 31 MB instead of 23).
    - `static`: int8 weights (per channel) and uint8 activations with scales calibrated (min/max) on
      `calibration_batches` (a list of tokenized batches, torch or numpy), operator-level int8 MatMuls and
      embeddings; the MatMuls reading a GELU output (the FFN down-projections) stay in float. Classification
      and causal LM graphs.

    Example::

        quantize_onnx("out/onnx", "out/onnx_int8_static", "static", task.metric_batches[:8])
    """
    require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if method not in ("dynamic", "static"):
        raise ValueError(f"method must be 'dynamic' or 'static', got {method!r}")
    source = Path(path_in)
    record = _read_record(source)
    if record.get("quantization"):
        raise InputError(f"{source} is already quantized ({record['quantization']['method']}): quantize a float one")
    if method == "static":
        if not calibration_batches:
            raise ValueError("static quantization needs calibration_batches (tokenized inputs)")
        if record["task"] == "seq2seq":
            raise InputError("static int8 is for classification and causal LM models; use dynamic for seq2seq")
    with folder_swap(path_out) as staging:
        for item in source.iterdir():
            if item.is_file() and item.name not in record["files"] and not item.name.endswith(".onnx.data"):
                shutil.copy2(item, staging / item.name)
        details = {}
        for name in record["files"]:
            with _quiet():
                if method == "dynamic":
                    quantize_dynamic(
                        str(source / name),
                        str(staging / name),
                        per_channel=True,
                        weight_type=QuantType.QInt8,
                        use_external_data_format=_is_large(source / name),
                    )
                else:
                    details = _quantize_static(source / name, staging / name, calibration_batches)
        record["quantization"] = {"method": method, "weights": "int8 per channel", **details}
        if method == "static":
            record["quantization"]["activations"] = "uint8, min/max calibration"
        write_json_atomic(staging / EXPORT_RECORD, record)
    return Path(path_out)
