"""Pruning: unstructured magnitude pruning on top of torch.nn.utils.prune, and structured pruning of attention
heads and feed-forward neurons of BERT-family encoders (the linear layers physically shrink)."""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn.utils import prune
from transformers.pytorch_utils import Conv1D

from ..errors import InputError

DEFAULT_EXCLUDE = (r"(^|\.)(classifier|lm_head|score|qa_outputs)(\.|$)",)


def check_amount(amount: float, name: str = "amount") -> None:
    if not 0 <= amount < 1:
        raise InputError(f"pruning {name} must be in [0, 1), got {amount}")


def prunable_weights(model: nn.Module, exclude=DEFAULT_EXCLUDE) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Linear / GPT-2 Conv1D whose name matches none of the `exclude` patterns.
    Embeddings and norms are not Linear layers; the task head is excluded by default."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, Conv1D)) and not any(re.search(p, name) for p in exclude)]


def sparsity(model: nn.Module, exclude=DEFAULT_EXCLUDE) -> dict[str, float]:
    """Fraction of zeros in each prunable weight, and `"global"` over all of them."""
    layers = {name: module.weight for name, module in prunable_weights(model, exclude)}
    out = {name: float((w == 0).sum()) / w.numel() for name, w in layers.items()}
    total = sum(w.numel() for w in layers.values())
    out["global"] = float(sum((w == 0).sum() for w in layers.values())) / max(total, 1)
    return out


def prune_magnitude(model: nn.Module, amount: float | None = None, threshold: float | None = None,
                    scope: str = "global", exclude=DEFAULT_EXCLUDE) -> dict[str, float]:
    """Unstructured L1 magnitude pruning of the Linear/Conv1D weights, made permanent (no masks left).

    `amount`: the fraction of weights to zero, over all layers together (`scope="global"`) or in each layer
    (`"local"`); or `threshold`: zero every weight with |w| < threshold. Returns `sparsity(model)`.

    Example::

        prune_magnitude(model, amount=0.5)            # half of all linear weights, smallest first
    """
    if (amount is None) == (threshold is None):
        raise InputError("give prune_magnitude an amount or a threshold (one of them)")
    if amount is not None:
        check_amount(amount)
    if scope not in ("global", "local"):
        raise InputError(f"scope must be 'global' or 'local', got {scope!r}")
    layers = [module for _, module in prunable_weights(model, exclude)]
    if threshold is not None:
        for module in layers:
            prune.custom_from_mask(module, "weight", mask=module.weight.detach().abs() >= threshold)
    elif scope == "global":
        prune.global_unstructured([(m, "weight") for m in layers], pruning_method=prune.L1Unstructured, amount=amount)
    else:
        for module in layers:
            prune.l1_unstructured(module, "weight", amount=amount)
    for module in layers:
        prune.remove(module, "weight")
    return sparsity(model, exclude)


# --- structured pruning of BERT-family encoders ---------------------------------------------------------------

def _encoder_layers(model: nn.Module):
    base = getattr(model, model.base_model_prefix, model)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None or not hasattr(layers[0], "attention") or not hasattr(layers[0].attention, "self"):
        raise InputError(f"structured pruning supports BERT-family encoders; {type(model).__name__} is not one")
    return layers


def _keep_rows(linear: nn.Linear, index: torch.Tensor) -> nn.Linear:
    new = nn.Linear(linear.in_features, len(index), bias=linear.bias is not None)
    new.weight.data = linear.weight.data[index].clone()
    if linear.bias is not None:
        new.bias.data = linear.bias.data[index].clone()
    return new.to(linear.weight.device)


def _keep_columns(linear: nn.Linear, index: torch.Tensor) -> nn.Linear:
    new = nn.Linear(len(index), linear.out_features, bias=linear.bias is not None)
    new.weight.data = linear.weight.data[:, index].clone()
    if linear.bias is not None:
        new.bias.data = linear.bias.data.clone()
    return new.to(linear.weight.device)


def head_importance(model: nn.Module, dataloader=None, max_batches: int = 20) -> torch.Tensor:
    """[layers, heads] importance of each attention head. With a dataloader of labelled batches: the
    first-order Taylor estimate |Σ W·∂L/∂W| over the head's columns of the attention output projection
    (Michel et al.: the gradient of a head's gate); without one: the L2 norm of those columns."""
    layers = _encoder_layers(model)
    heads = layers[0].attention.self.num_attention_heads
    size = layers[0].attention.self.attention_head_size
    weights = [layer.attention.output.dense.weight for layer in layers]
    if dataloader is None:
        return torch.stack([w.detach().view(w.shape[0], heads, size).norm(dim=(0, 2)) for w in weights])
    model.eval()
    scores = torch.zeros(len(layers), heads)
    device = next(model.parameters()).device
    for i, batch in enumerate(dataloader):
        if i >= max_batches:
            break
        model.zero_grad()
        model(**{k: v.to(device) for k, v in batch.items()}).loss.backward()
        for j, w in enumerate(weights):
            scores[j] += (w * w.grad).detach().view(w.shape[0], heads, size).sum(dim=(0, 2)).abs().cpu()
    model.zero_grad()
    return scores


def remove_heads(model: nn.Module, heads_to_remove: dict[int, list[int]]) -> None:
    """Physically remove the given heads {layer: [head, ...]} from a BERT-family model, in place. The heads
    left per layer are recorded in `model.config.hfopt_heads_per_layer` (what `apply_structure` replays)."""
    layers = _encoder_layers(model)
    for layer_index, heads in heads_to_remove.items():
        attention = layers[int(layer_index)].attention
        current, size = attention.self.num_attention_heads, attention.self.attention_head_size
        keep_heads = [h for h in range(current) if h not in set(heads)]
        if not keep_heads:
            raise InputError(f"pruning would remove every head of layer {layer_index}")
        index = torch.tensor([h * size + k for h in keep_heads for k in range(size)], dtype=torch.long)
        for name in ("query", "key", "value"):
            setattr(attention.self, name, _keep_rows(getattr(attention.self, name), index))
        attention.output.dense = _keep_columns(attention.output.dense, index)
        attention.self.num_attention_heads = len(keep_heads)
        attention.self.all_head_size = len(keep_heads) * size
    model.config.hfopt_heads_per_layer = [layer.attention.self.num_attention_heads for layer in layers]


def apply_structure(model: nn.Module) -> nn.Module:
    """Shrink a freshly built model to the head counts and feed-forward sizes recorded in its config
    (`hfopt_heads_per_layer`, `hfopt_ffn_sizes`), so that a structurally pruned state dict loads into it."""
    heads = getattr(model.config, "hfopt_heads_per_layer", None)
    sizes = getattr(model.config, "hfopt_ffn_sizes", None)
    if heads or sizes:
        layers = _encoder_layers(model)
        for i, layer in enumerate(layers):
            current = layer.attention.self.num_attention_heads
            if heads and heads[i] < current:
                remove_heads(model, {i: list(range(heads[i], current))})
            if sizes and sizes[i] < layer.intermediate.dense.out_features:
                shrink_ffn(model, {i: list(range(sizes[i]))})
    return model


def prune_heads(model: nn.Module, amount: float, dataloader=None) -> dict[int, list[int]]:
    """Remove the least important `amount` of all attention heads (globally ranked, at least one head kept
    per layer) and return {layer: [removed heads]}. See `head_importance` for the ranking.

    Example::

        removed = prune_heads(model, amount=0.4, dataloader=trainer.get_eval_dataloader())
    """
    check_amount(amount)
    scores = head_importance(model, dataloader)
    n_layers, n_heads = scores.shape
    order = sorted(((float(scores[l, h]), l, h) for l in range(n_layers) for h in range(n_heads)))
    budget, removed = int(round(amount * n_layers * n_heads)), {}
    for _, layer, head in order:
        if budget == 0:
            break
        if len(removed.get(layer, [])) < n_heads - 1:
            removed.setdefault(layer, []).append(head)
            budget -= 1
    remove_heads(model, {layer: sorted(heads) for layer, heads in removed.items()})
    return {layer: sorted(heads) for layer, heads in removed.items()}


def shrink_ffn(model: nn.Module, keep: dict[int, list[int]]) -> None:
    """Keep only the given intermediate neurons {layer: [neuron, ...]} of each feed-forward block, in place;
    the sizes are recorded in `model.config.hfopt_ffn_sizes`."""
    layers = _encoder_layers(model)
    for layer_index, neurons in keep.items():
        layer = layers[int(layer_index)]
        index = torch.tensor(sorted(neurons), dtype=torch.long)
        layer.intermediate.dense = _keep_rows(layer.intermediate.dense, index)
        layer.output.dense = _keep_columns(layer.output.dense, index)
    model.config.hfopt_ffn_sizes = [layer.intermediate.dense.out_features for layer in layers]


def prune_ffn(model: nn.Module, amount: float, dataloader=None) -> list[int]:
    """Remove the least important `amount` of each layer's feed-forward neurons (importance: |w_in|·|w_out|
    of the neuron, or the Taylor estimate with a dataloader) and return the new sizes per layer."""
    check_amount(amount)
    layers = _encoder_layers(model)
    if dataloader is not None:
        model.eval()
        device = next(model.parameters()).device
        scores = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
        for i, batch in enumerate(dataloader):
            if i >= 20:
                break
            model.zero_grad()
            model(**{k: v.to(device) for k, v in batch.items()}).loss.backward()
            for j, layer in enumerate(layers):
                w = layer.output.dense.weight
                scores[j] += (w * w.grad).sum(0).abs().detach().cpu()
        model.zero_grad()
    else:
        scores = [layer.intermediate.dense.weight.detach().norm(dim=1) * layer.output.dense.weight.detach().norm(dim=0)
                  for layer in layers]
    keep = {}
    for j, score in enumerate(scores):
        n_keep = max(1, len(score) - int(round(amount * len(score))))
        keep[j] = torch.topk(score, n_keep).indices.tolist()
    shrink_ffn(model, keep)
    return model.config.hfopt_ffn_sizes
