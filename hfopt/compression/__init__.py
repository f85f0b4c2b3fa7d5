"""Compression: pruning (unstructured, structured, gradual during training), quantization (after training or
quantization-aware), weight sharing, saving/loading of compressed models, and the compression report.

Example::

    from hfopt.compression import prune_magnitude, quantize, save_compressed, load_compressed, share_layers
    prune_magnitude(model, amount=0.5)
    save_compressed(quantize(model, "dynamic_int8", embeddings=True), "out/compressed")
    export_onnx(model, tokenizer, "out/onnx")          # ONNX Runtime (the onnx extra); load_onnx("out/onnx")
"""

from .gradual import GradualPruningCallback
from .io import load_compressed, save_compressed
from .onnx import export_onnx, load_onnx, quantize_onnx
from .pruning import (
    apply_structure,
    head_importance,
    prune_ffn,
    prune_heads,
    prune_magnitude,
    remove_heads,
    shrink_ffn,
    sparsity,
)
from .qat import QuantizationAwareTrainingCallback, convert_qat, prepare_qat, strip_qat
from .quantization import conv1d_to_linear, quantize
from .sharing import share_layers
from .training import apply_model_compression, apply_training_compression
from .vocabulary import prune_vocabulary

__all__ = [
    "GradualPruningCallback",
    "QuantizationAwareTrainingCallback",
    "apply_model_compression",
    "apply_structure",
    "apply_training_compression",
    "conv1d_to_linear",
    "convert_qat",
    "export_onnx",
    "head_importance",
    "load_compressed",
    "load_onnx",
    "prepare_qat",
    "prune_ffn",
    "prune_heads",
    "prune_magnitude",
    "prune_vocabulary",
    "quantize",
    "quantize_onnx",
    "remove_heads",
    "save_compressed",
    "share_layers",
    "shrink_ffn",
    "sparsity",
    "strip_qat",
]
