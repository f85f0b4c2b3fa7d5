"""ONNX export, int8 quantization and ONNX Runtime inference of classification, causal LM and seq2seq models.

Example::

    export_onnx(model, tokenizer, "out/onnx")                       # model.onnx, config, tokenizer, onnx_export.json
    export_onnx(model, tokenizer, "out/plain", optimize=False)      # unfused: what dynamic int8 quantizes best
    quantize_onnx("out/plain", "out/onnx_int8", "dynamic")
    model = load_onnx("out/onnx_int8")
    model(**tokenizer(["a fine film"], return_tensors="pt")).logits  # a torch tensor, as from the PyTorch model
"""

from ._common import EXPORT_RECORD, require_onnx
from .export import export_onnx
from .quantize import quantize_onnx
from .runtime import OnnxModel, load_onnx
from .stages import ONNX_STAGES, export_stages

__all__ = [
    "EXPORT_RECORD",
    "ONNX_STAGES",
    "OnnxModel",
    "export_onnx",
    "export_stages",
    "load_onnx",
    "quantize_onnx",
    "require_onnx",
]
