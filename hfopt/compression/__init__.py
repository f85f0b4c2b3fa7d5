"""Post-training compression: pruning (unstructured and structured), quantization, saving/loading, reports.

Example::

    from hfopt.compression import prune_magnitude, quantize, save_compressed, load_compressed
    prune_magnitude(model, amount=0.5)
    save_compressed(quantize(model, "dynamic_int8", embeddings=True), "out/compressed")
"""

from .io import load_compressed, save_compressed
from .pruning import apply_structure, head_importance, prune_ffn, prune_heads, prune_magnitude, remove_heads, sparsity
from .quantization import conv1d_to_linear, quantize

__all__ = ["apply_structure", "conv1d_to_linear", "head_importance", "load_compressed", "prune_ffn", "prune_heads",
           "prune_magnitude", "quantize", "remove_heads", "save_compressed", "sparsity"]
