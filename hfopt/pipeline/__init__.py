"""The compression pipeline as one call: declared stages (a student, vocabulary, sharing, head/FFN/magnitude
pruning, recovery training, QAT, quantization, ONNX Runtime), resumable by fingerprint, with one report.

It composes two features, distillation (the training stages) and compression (everything else), so it is a room
above them rather than a part of either.

Example::

    from hfopt.pipeline import CompressionConfig, compress

    config = CompressionConfig(eval_file="dev.tsv", train_file="train.tsv", student_layers=[3], prune_heads=0.4,
                               recover="distill", quantize="dynamic_int8", quantize_embeddings=True)
    result = compress("runs/teacher", config, "runs/compressed")
    result.report["stages"]["quantize_dynamic_int8"]["accuracy"]
"""

from .config import ORDER, CompressionConfig, load_config_file
from .runner import CompressionResult, compress
from .source import load_source

__all__ = ["ORDER", "CompressionConfig", "CompressionResult", "compress", "load_config_file", "load_source"]
