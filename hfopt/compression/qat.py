"""Quantization-aware training for the dynamic int8 model `quantize(model, "dynamic_int8")` makes: fine-tune with
the deployed int8 arithmetic simulated (straight-through), then convert to that model.

Every nn.Linear and GPT-2 Conv1D (a head tied to the input embeddings excepted, as in `quantize`) computes, while
prepared, with fake-quantized numerics that match torch.ao's dynamic int8 Linear: int8 symmetric weights per
output channel (scale max|w| / 127.5, as its per-channel observer) and uint8 activations per tensor from the
batch's min/max (0..127 with fbgemm/x86/onednn, whose kernels reduce the range; 0..255 with qnnpack), rounding
with a straight-through gradient. The deployed int8 model then computes what training saw (logits agree to
~1e-6). torchao's QAT prepares and trains too, but none of its convert targets runs fast on CPU; the CPU's fast
int8 model is torch.ao's dynamic one, hence this.

Preparing swaps the modules' classes only: the same module objects, Parameters and state_dict keys, so the
optimizer, checkpoints (they load with `from_pretrained`), resume and DDP are unaffected.

Example::

    trainer = Trainer(model=model, args=args, ..., callbacks=[QuantizationAwareTrainingCallback()])
    trainer.train()                                      # fake-quantized; plain float modules again at the end
    save_compressed(convert_qat(model), "out/int8", tokenizer)
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.pytorch_utils import Conv1D

from ..errors import InputError
from .io import save_compressed
from .quantization import quantize, tied_output_head

logger = logging.getLogger(__name__)

__all__ = [
    "QATConv1D",
    "QATLinear",
    "QuantizationAwareTrainingCallback",
    "activation_range",
    "convert_qat",
    "fake_quantize_activation",
    "prepare_qat",
    "qat_layers",
    "strip_qat",
]

_EPS = torch.finfo(torch.float32).eps


def activation_range() -> tuple[int, int]:
    """The uint8 range torch.ao's dynamic int8 Linear quantizes activations to on this quantized engine: it asks
    for a reduced range, which fbgemm, x86 and onednn honour (0..127) and qnnpack ignores (0..255).

    Example::

        activation_range()          # (0, 127) on x86
    """
    return (0, 255) if torch.backends.quantized.engine == "qnnpack" else (0, 127)


def fake_quantize_weight(weight: torch.Tensor, axis: int) -> torch.Tensor:
    """int8 symmetric per channel (channels along `axis`, scale max|w| / 127.5), straight-through gradient.

    Example::

        fake_quantize_weight(linear.weight, axis=0)          # nn.Linear: one scale per output row
    """
    with torch.no_grad():
        dims = 1 - axis
        amax = torch.maximum(-weight.amin(dim=dims).clamp(max=0), weight.amax(dim=dims).clamp(min=0)).float()
        scale = (amax / 127.5).clamp(min=_EPS)
        zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight.float(), scale, zero, axis, -128, 127).to(weight.dtype)


def fake_quantize_activation(x: torch.Tensor) -> torch.Tensor:
    """uint8 affine per tensor on `activation_range()`, scale and zero point chosen as ATen's dynamic quantization
    does (the range always holds 0; computed in double), straight-through gradient.

    Example::

        fake_quantize_activation(hidden_states)
    """
    qmin, qmax = activation_range()
    with torch.no_grad():
        low, high = x.min().clamp(max=0).double(), x.max().clamp(min=0).double()
        scale = ((high - low) / (qmax - qmin)).float().clamp(min=_EPS)
        zero = (qmin - torch.round(low / scale)).clamp(qmin, qmax).to(torch.int32)
    return torch.fake_quantize_per_tensor_affine(x.float(), scale.reshape(1), zero.reshape(1), qmin, qmax).to(x.dtype)


class QATLinear(nn.Linear):
    """An nn.Linear computing with fake-quantized int8 weights (per output row) and activations; `prepare_qat`
    makes it by a class swap, `strip_qat` undoes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(fake_quantize_activation(x), fake_quantize_weight(self.weight, 0), self.bias)


class QATConv1D(Conv1D):
    """GPT-2's Conv1D (y = xW + b, W [in, out]) computing with fake-quantized int8 weights per output column and
    fake-quantized activations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        x = fake_quantize_activation(x).reshape(-1, x.size(-1))
        return torch.addmm(self.bias, x, fake_quantize_weight(self.weight, 1)).view(size_out)


_SWAPS = {nn.Linear: QATLinear, Conv1D: QATConv1D}
_BACK = {prepared: plain for plain, prepared in _SWAPS.items()}


def qat_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the layers quantization-aware training fake-quantizes (and `quantize` makes int8): every
    nn.Linear and Conv1D but a head tied to the input embeddings. A model without any is an InputError.

    Example::

        [name for name, _ in qat_layers(gpt2)]      # every Conv1D of the blocks; lm_head is tied: left out
    """
    tied = tied_output_head(model)
    layers = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, Conv1D)) and type(module) in (*_SWAPS, *_BACK) and name != tied
    ]
    if not layers:
        raise InputError(
            f"quantization-aware training (--qat) needs nn.Linear or GPT-2 Conv1D layers; "
            f"{type(model).__name__} has none besides a head tied to its embeddings"
        )
    return layers


def prepare_qat(model: nn.Module) -> int:
    """Fake-quantize every nn.Linear and Conv1D but a head tied to the input embeddings, in place (a class swap:
    same modules, Parameters and state_dict), and return how many. A model without any is an InputError.

    Example::

        prepare_qat(model)        # train...
        strip_qat(model)
    """
    layers = qat_layers(model)
    for _, module in layers:
        module.__class__ = _SWAPS.get(type(module), type(module))
    return len(layers)


def strip_qat(model: nn.Module) -> int:
    """Undo `prepare_qat`: plain nn.Linear / Conv1D modules holding the trained float weights; returns how many.

    Example::

        strip_qat(model); model.save_pretrained("out")
    """
    count = 0
    for module in model.modules():
        if type(module) in _BACK:
            module.__class__ = _BACK[type(module)]
            count += 1
    return count


def convert_qat(model: nn.Module) -> nn.Module:
    """The deployable int8 model of a quantization-aware trained one, in place: the float modules back, on CPU, in
    eval mode, then `quantize(model, "dynamic_int8")` (the layout `save_compressed` / `load_compressed` handle).

    Example::

        int8 = convert_qat(copy.deepcopy(trainer.model))
        save_compressed(int8, "out/int8", tokenizer)
    """
    strip_qat(model)
    return quantize(model.cpu().float().eval(), "dynamic_int8")


class QuantizationAwareTrainingCallback(TrainerCallback):
    """Quantization-aware training in any Trainer: `prepare_qat` when training starts (after the optimizer is
    built and a checkpoint loaded: the swap keeps their Parameters), `strip_qat` when it ends, so `trainer.model`
    is a plain float model for `save_model` and `convert_qat`. Evaluations during training run fake-quantized
    (the int8 model's metrics); those after `train()` run the float model.

    With `int8_dir`, the main process also writes `convert_qat` of a copy of the trained model there with
    `save_compressed` at the end of training (a path relative to the run's output_dir, with the tokenizer).

    Args:
        int8_dir: where the converted int8 model goes (relative to output_dir); None: nowhere.

    Example::

        trainer = Trainer(..., callbacks=[QuantizationAwareTrainingCallback(int8_dir="int8")])
        trainer.train()                                      # output_dir/int8 loads with load_compressed
    """

    def __init__(self, int8_dir: str | None = None):
        self.int8_dir = int8_dir

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        count = prepare_qat(model)
        logger.info("Quantization-aware training: %d layers compute with fake-quantized int8", count)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        strip_qat(model)
        if self.int8_dir is None or not state.is_world_process_zero:
            return
        path = Path(args.output_dir) / self.int8_dir
        save_compressed(convert_qat(copy.deepcopy(model)), path, processing_class)
        logger.info("The quantization-aware trained int8 model is in %s (load it with load_compressed)", path)
