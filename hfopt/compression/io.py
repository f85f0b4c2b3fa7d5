"""Saving and loading compressed models: safetensors plus a small JSON recipe, for pruned and quantized
models alike (dynamically quantized modules, which `save_pretrained` cannot write, are stored as their int8
tensors and scales)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import InputError
from ..models import RECIPE_FILE, RebuiltWeights, load_model_folder
from ..run import folder_swap
from .quantization import conv1d_to_linear, is_torchao_tensor, quantize

__all__ = ["RECIPE_FILE", "CompressedFolder", "load_compressed", "save_compressed"]

# RECIPE_FILE (compression.json) is hfopt.models's: the core tells a compressed folder by it
WEIGHTS_FILE = "model.safetensors"


def _quantized_types():
    from torch.ao.nn.quantized import Embedding as QEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    return QLinear, QEmbedding


def _qtensor_parts(prefix: str, q: torch.Tensor) -> dict[str, torch.Tensor]:
    parts = {f"{prefix}.int_repr": q.int_repr()}
    if q.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        parts[f"{prefix}.scale"] = torch.tensor([q.q_scale()], dtype=torch.float64)
        parts[f"{prefix}.zero_point"] = torch.tensor([q.q_zero_point()], dtype=torch.int64)
    else:
        parts[f"{prefix}.scales"] = q.q_per_channel_scales()
        parts[f"{prefix}.zero_points"] = q.q_per_channel_zero_points()
        parts[f"{prefix}.axis"] = torch.tensor([q.q_per_channel_axis()], dtype=torch.int64)
    return parts


def _qtensor_from(prefix: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    data = tensors[f"{prefix}.int_repr"]
    if f"{prefix}.scale" in tensors:
        return torch._make_per_tensor_quantized_tensor(
            data, float(tensors[f"{prefix}.scale"]), int(tensors[f"{prefix}.zero_point"])
        )
    return torch._make_per_channel_quantized_tensor(
        data, tensors[f"{prefix}.scales"], tensors[f"{prefix}.zero_points"], int(tensors[f"{prefix}.axis"])
    )


RECORD_KEY = "hfopt_record"  # safetensors metadata: the record and config the weights were saved with
VOLATILE_CONFIG_KEYS = ("transformers_version",)


def _described(recipe: dict, config: dict) -> dict:
    """What the weights were saved as: compression.json and config.json (less the transformers version)."""
    return {
        RECIPE_FILE: recipe,
        "config.json": {k: v for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS},
    }


def _first_difference(saved, now, where: tuple = ()):
    """(key path, saved value, current value) of the first difference between two JSON values, else None."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now), key=str):
            if key not in now or key not in saved:
                return ((*where, key), saved.get(key, "(absent)"), now.get(key, "(absent)"))
            found = _first_difference(saved[key], now[key], (*where, key))
            if found:
                return found
        return None
    return (where, saved, now) if saved != now else None


def _check_record(path: Path, recipe: dict, stored: str | None) -> None:
    """Refuse a folder whose compression.json or config.json differs from the record stored inside its weights
    file by save_compressed (folders written before the record was stored are checked by shapes alone)."""
    if stored is None:
        return
    try:
        config = json.loads((path / "config.json").read_text())
        saved = json.loads(stored)
    except (OSError, ValueError) as err:
        raise InputError(f"{path / 'config.json'} cannot be read ({type(err).__name__}: {err})") from None
    difference = _first_difference(saved, _described(recipe, config))
    if difference:
        (file, *keys), was, now = difference
        key = ".".join(map(str, keys)) or "its content"
        raise InputError(
            f"{path}: {file} no longer describes {WEIGHTS_FILE}: {key} is {json.dumps(now)[:80]}, "
            f"the weights were saved with {json.dumps(was)[:80]}; undo the edit or save the model again"
        )


def save_compressed(model: nn.Module, path: str | os.PathLike, tokenizer=None) -> Path:
    """Write model (pruned and/or quantized by hfopt) to path: config.json, model.safetensors and
    compression.json (plus the tokenizer if given), through a temporary folder renamed at the end.

    Example::

        save_compressed(quantize(model, "dynamic_int8"), "out/int8", tokenizer)
        model = load_compressed("out/int8")
    """
    QLinear, QEmbedding = _quantized_types()
    path = Path(path)
    tensors, kinds, seen = {}, {}, {}
    aliases = {}
    for name, module in model.named_modules():
        if isinstance(module, QLinear):
            weight, bias = module._packed_params._weight_bias()
            tensors.update(_qtensor_parts(f"{name}.weight", weight))
            if bias is not None:
                tensors[f"{name}.bias"] = bias.detach().contiguous()
            kinds[name] = "linear_int8"
        elif isinstance(module, QEmbedding):
            tensors.update(_qtensor_parts(f"{name}.weight", module.weight()))
            kinds[name] = "embedding_int8"
    quantized_prefixes = tuple(f"{name}." for name in kinds)
    torchao_tensors = {}  # torchao's quantized tensor subclasses: flattened by torchao's own safetensors support
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor) or value.is_quantized or key.startswith(quantized_prefixes):
            continue
        if is_torchao_tensor(value):
            torchao_tensors[key] = value
            continue
        pointer = (value.data_ptr(), value.shape, value.dtype)
        if pointer in seen:  # a tied weight: stored once
            aliases[key] = seen[pointer]
            continue
        seen[pointer] = key
        tensors[key] = value.detach().contiguous()
    metadata = None
    if torchao_tensors:
        from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

        flat, metadata = flatten_tensor_state_dict(torchao_tensors)
        tensors.update(flat)
    recipe = {
        "format": "hfopt-compressed/1",
        "architecture": type(model).__name__,
        "quantized_modules": kinds,
        "torchao_tensors": sorted(torchao_tensors),
        "aliases": aliases,
        "quantization": getattr(model.config, "hfopt_quantization", None),
    }
    with folder_swap(path) as staging:
        model.config.save_pretrained(staging)
        generation_config = getattr(model, "generation_config", None)
        if generation_config is not None and model.can_generate():
            generation_config.save_pretrained(staging)  # the model's decoding settings (its KV cache among them)
        record_text = json.dumps(recipe, indent=2) + "\n"
        described = _described(json.loads(record_text), json.loads((staging / "config.json").read_text()))
        metadata = {**(metadata or {}), RECORD_KEY: json.dumps(described, sort_keys=True)}
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata=metadata)
        (staging / RECIPE_FILE).write_text(record_text)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
    return path


def load_compressed(path: str | os.PathLike) -> nn.Module:
    """Rebuild a model written by `save_compressed`: the architecture from its config, the recorded structure
    (heads, feed-forward sizes, shared blocks, Conv1D as Linear), the same quantization, then its saved tensors.
    The one loader for structurally pruned and quantized models; plain pruned models also load with
    from_pretrained. It is `hfopt.models.load_model_folder(path, compressed=CompressedFolder)` for a folder that
    must hold compression.json; `load_model_folder` with the hook loads any model folder.

    The record is checked against the weights: every tensor of the file must be used and every weight of the
    model filled, with the right shape; a damaged or edited record is an InputError, never random weights.
    """
    path = Path(path)
    if not (path / RECIPE_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise InputError(f"{path} is not a folder written by save_compressed (no {RECIPE_FILE} or {WEIGHTS_FILE})")
    return load_model_folder(path, compressed=CompressedFolder)


class CompressedFolder:
    """The record of a folder written by `save_compressed` (compression.json), read and checked against the
    record stored in its weights file: the `compressed` hook of `hfopt.models.load_model_folder`, which does the
    common sequence (the model from its config, structure, sharing, the tensors checked and loaded) and calls
    `rebuild` to turn the float model into the recorded one (Conv1D as Linear, fp16/bf16, torchao and dynamic
    int8 modules with their saved int8 tensors).

    Example::

        model = load_model_folder("out/model", AutoModelForCausalLM, compressed=CompressedFolder)
    """

    def __init__(self, folder: str | os.PathLike):
        import transformers

        self.folder = Path(folder)
        self.weights_files = [self.folder / WEIGHTS_FILE]
        try:
            self.recipe = json.loads((self.folder / RECIPE_FILE).read_text())
            self.model_class = getattr(transformers, self.recipe["architecture"])
            self.quantized = dict(self.recipe.get("quantized_modules", {}))
        except (ValueError, KeyError, AttributeError, TypeError) as err:
            raise InputError(f"{self.folder / RECIPE_FILE} is damaged ({type(err).__name__}: {err})") from None
        if not (self.folder / WEIGHTS_FILE).is_file():
            raise InputError(f"{self.folder} records a compressed model but holds no {WEIGHTS_FILE}")
        with safe_open(str(self.folder / WEIGHTS_FILE), framework="pt") as f:
            self.metadata = dict(f.metadata() or {})
        _check_record(self.folder, self.recipe, self.metadata.pop(RECORD_KEY, None))

    def rebuild(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> RebuiltWeights:
        """Quantize `model` (built from its config, with its structure) as recorded and set its int8 modules from
        `tensors`; returns the float tensors to load, and what it used itself."""
        path, recipe, quantized = self.folder, self.recipe, self.quantized
        quantization = recipe.get("quantization") or {}
        if getattr(model.config, "hfopt_conv1d_as_linear", False):
            conv1d_to_linear(model)
        if quantization.get("method") in ("fp16", "bf16", "int8_weight_only"):
            quantize(model, quantization["method"])
        torchao_tensors = {}
        if recipe.get("torchao_tensors"):
            from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

            torchao_tensors, tensors = unflatten_tensor_state_dict(tensors, self.metadata)
        consumed: set[str] = set()
        prefixes = tuple(f"{m}." for m in quantized)
        float_state = {k: v for k, v in tensors.items() if not k.startswith(prefixes)}
        for alias, source in recipe.get("aliases", {}).items():
            if source not in float_state:
                raise InputError(f"{path / RECIPE_FILE}: {alias} is recorded as a copy of {source}, which is not saved")
            float_state[alias] = float_state[source]
        if quantization.get("method") == "dynamic_int8" or quantized:
            model.eval()
            quantize(model, "dynamic_int8", embeddings=quantization.get("embeddings", False))
            modules = dict(model.named_modules())
            QLinear, QEmbedding = _quantized_types()
            for name, kind in quantized.items():
                module = modules.get(name)
                expected_type = QLinear if kind == "linear_int8" else QEmbedding
                if not isinstance(module, expected_type):
                    raise InputError(f"{path}: the record names {name} as {kind}, which this model does not have")
                try:
                    weight = _qtensor_from(f"{name}.weight", tensors)
                except KeyError as err:
                    raise InputError(f"{path}: the int8 weight of {name} is missing ({err})") from None
                consumed.update(k for k in tensors if k.startswith(f"{name}.weight."))
                if kind == "linear_int8":
                    bias = tensors.get(f"{name}.bias")
                    consumed.add(f"{name}.bias")
                    module.set_weight_bias(weight, bias)
                else:
                    module.set_weight(weight)
            unrecorded = [n for n, m in modules.items() if isinstance(m, (QLinear, QEmbedding)) and n not in quantized]
            if unrecorded:
                raise InputError(f"{path}: int8 modules {unrecorded[:3]} have no saved weights in the record")
        leftover = sorted(set(tensors) - set(float_state) - consumed)
        return RebuiltWeights(float_state, leftover=leftover, filled=prefixes, after=torchao_tensors)
