"""Post-training quantization: dynamic int8 linear layers (and optionally int8 embeddings) on CPU, torchao
int8 weight-only, or a plain fp16/bf16 cast. GPT-2's Conv1D layers are converted to Linear first, so that
its attention and MLP are quantized too."""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import InputError

__all__ = ["METHODS", "conv1d_to_linear", "is_torchao_tensor", "quantize", "tied_output_head"]

logger = logging.getLogger(__name__)
METHODS = ("dynamic_int8", "int8_weight_only", "fp16", "bf16")


def conv1d_to_linear(model: nn.Module) -> int:
    """Replace every transformers Conv1D (GPT-2's y = xW + b) by the equivalent nn.Linear, in place."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                linear = nn.Linear(
                    child.weight.shape[0], child.weight.shape[1], device=child.weight.device, dtype=child.weight.dtype
                )
                linear.weight.data = child.weight.data.t().contiguous()
                linear.bias.data = child.bias.data.clone()
                setattr(parent, name, linear)
                count += 1
    if count:
        model.config.hfopt_conv1d_as_linear = True
    return count


def is_torchao_tensor(tensor: torch.Tensor) -> bool:
    """Whether a weight is one of torchao's quantized tensor subclasses (what `int8_weight_only` makes)."""
    return type(tensor).__module__.startswith("torchao.")


def tied_output_head(model: nn.Module) -> str | None:
    """The name of the output head whose weight is tied to the input embeddings, if any."""
    get_out, get_in = getattr(model, "get_output_embeddings", None), getattr(model, "get_input_embeddings", None)
    out, inp = (get_out() if get_out else None), (get_in() if get_in else None)
    if out is None or inp is None or out.weight is not inp.weight:
        return None
    return next(name for name, module in model.named_modules() if module is out)


def quantize(model: nn.Module, method: str = "dynamic_int8", embeddings: bool = False) -> nn.Module:
    """Quantize a model in place and record how in `model.config.hfopt_quantization`.

    - `dynamic_int8`: int8 weights (one scale per output channel) and dynamically quantized activations for
      every Linear (torch.ao; CPU kernels only); `embeddings=True` also stores embedding tables as int8 (per-row
      scales). A head tied to the input embeddings keeps the tie: both stay in float.
    - `int8_weight_only`: torchao's int8 weight-only linear layers (needs the `quant` extra), on CPU or GPU;
      GPT-2's Conv1D layers included, a tied output head kept in float.
    - `fp16` / `bf16`: cast every weight.

    Example::

        quantize(model.cpu().eval(), "dynamic_int8", embeddings=True)
    """
    if method not in METHODS:
        raise InputError(f"quantization method '{method}' is not one of {', '.join(METHODS)}")
    if method in ("fp16", "bf16"):
        model.to(torch.float16 if method == "fp16" else torch.bfloat16)
    elif method == "int8_weight_only":
        try:
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
        except ImportError:
            raise InputError('int8_weight_only needs torchao: pip install "hfopt[quant]"') from None
        conv1d_to_linear(model)
        tied = tied_output_head(model)  # quantizing it would break the tie: it stays in float
        quantize_(
            model, Int8WeightOnlyConfig(), filter_fn=lambda module, name: isinstance(module, nn.Linear) and name != tied
        )
    else:
        if any(p.is_cuda for p in model.parameters()):
            raise InputError(
                "dynamic int8 quantization runs on CPU only and this model is on CUDA: move it with "
                "model.cpu() first (or use int8_weight_only / fp16 / bf16 on GPU)"
            )
        from torch.ao.quantization import (
            float_qparams_weight_only_qconfig,
            per_channel_dynamic_qconfig,
            quantize_dynamic,
        )

        conv1d_to_linear(model)
        tied = tied_output_head(model)
        # per output channel scales: on MiniLM/SST-2 per-tensor int8 cost 1.1 accuracy points, per-channel none
        spec = {
            name: per_channel_dynamic_qconfig
            for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name != tied
        }
        if embeddings:
            spec.update(
                {
                    name: float_qparams_weight_only_qconfig
                    for name, m in model.named_modules()
                    if isinstance(m, nn.Embedding) and not (tied and m is model.get_input_embeddings())
                }
            )
        if tied:
            logger.info("%s is tied to the input embeddings: both stay in float to keep the tie", tied)
        quantize_dynamic(model, qconfig_spec=spec, dtype=torch.qint8, inplace=True)
        from torch.ao.nn.quantized import Embedding as QEmbedding

        for module in model.modules():
            if isinstance(module, QEmbedding):  # its kernel needs contiguous ids; position ids are often a view
                module.register_forward_pre_hook(_contiguous_inputs)
    model.config.hfopt_quantization = {"method": method, "embeddings": bool(embeddings)}
    return model


def _contiguous_inputs(module, args):
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)
