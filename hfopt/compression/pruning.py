"""Pruning: unstructured magnitude pruning on top of torch.nn.utils.prune, and structured pruning of attention
heads and feed-forward neurons of BERT-family encoders and GPT-2 (the linear layers physically shrink)."""

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


# --- structured pruning of BERT-family encoders and GPT-2 ------------------------------------------------------
# Every projection is an nn.Linear (weight [out, in]) or a GPT-2 Conv1D (weight [in, out]); the helpers below
# slice either kind along its inputs or outputs, so the same code serves both families (and a GPT-2 whose
# Conv1D layers were already turned into Linear by `quantize`).


def _in_major(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` (the module's weight or its gradient) as [in_features, out_features]."""
    return tensor if isinstance(module, Conv1D) else tensor.t()


def _keep_outputs(module: nn.Module, index: torch.Tensor) -> nn.Module:
    """A copy of a Linear/Conv1D that computes only the output features in `index`."""
    weight = module.weight.data
    if isinstance(module, Conv1D):
        new = Conv1D(len(index), weight.shape[0])
        new.weight.data = weight[:, index].clone()
    else:
        new = nn.Linear(module.in_features, len(index), bias=module.bias is not None)
        new.weight.data = weight[index].clone()
    if module.bias is not None:
        new.bias.data = module.bias.data[index].clone()
    return new.to(weight.device)


def _keep_inputs(module: nn.Module, index: torch.Tensor) -> nn.Module:
    """A copy of a Linear/Conv1D that reads only the input features in `index`."""
    weight = module.weight.data
    if isinstance(module, Conv1D):
        new = Conv1D(weight.shape[1], len(index))
        new.weight.data = weight[index].clone()
    else:
        new = nn.Linear(len(index), module.out_features, bias=module.bias is not None)
        new.weight.data = weight[:, index].clone()
    if module.bias is not None:
        new.bias.data = module.bias.data.clone()
    return new.to(weight.device)


def _out_features(module: nn.Module) -> int:
    return module.weight.shape[1] if isinstance(module, Conv1D) else module.out_features


class _BertLayout:
    """Where heads and feed-forward neurons live in a BERT-family encoder layer."""

    def __init__(self, layers):
        self.layers = layers

    def heads(self, i: int) -> tuple[int, int]:
        attention = self.layers[i].attention.self
        return attention.num_attention_heads, attention.attention_head_size

    def attention_output(self, i: int) -> nn.Module:
        return self.layers[i].attention.output.dense

    def ffn_input(self, i: int) -> nn.Module:
        return self.layers[i].intermediate.dense

    def ffn_output(self, i: int) -> nn.Module:
        return self.layers[i].output.dense

    def keep_heads(self, i: int, index: torch.Tensor, n_heads: int) -> None:
        attention = self.layers[i].attention
        for name in ("query", "key", "value"):
            setattr(attention.self, name, _keep_outputs(getattr(attention.self, name), index))
        attention.output.dense = _keep_inputs(attention.output.dense, index)
        attention.self.num_attention_heads = n_heads
        attention.self.all_head_size = len(index)

    def keep_neurons(self, i: int, index: torch.Tensor) -> None:
        layer = self.layers[i]
        layer.intermediate.dense = _keep_outputs(layer.intermediate.dense, index)
        layer.output.dense = _keep_inputs(layer.output.dense, index)


class _GPT2Layout:
    """Where heads and feed-forward neurons live in a GPT-2 block (query, key and value share `c_attn`)."""

    def __init__(self, layers):
        self.layers = layers

    def heads(self, i: int) -> tuple[int, int]:
        attention = self.layers[i].attn
        return attention.num_heads, attention.head_dim

    def attention_output(self, i: int) -> nn.Module:
        return self.layers[i].attn.c_proj

    def ffn_input(self, i: int) -> nn.Module:
        return self.layers[i].mlp.c_fc

    def ffn_output(self, i: int) -> nn.Module:
        return self.layers[i].mlp.c_proj

    def keep_heads(self, i: int, index: torch.Tensor, n_heads: int) -> None:
        attention = self.layers[i].attn
        width = attention.split_size  # c_attn outputs [query | key | value], each `split_size` wide
        attention.c_attn = _keep_outputs(attention.c_attn, torch.cat([index + k * width for k in range(3)]))
        attention.c_proj = _keep_inputs(attention.c_proj, index)
        attention.num_heads, attention.split_size = n_heads, len(index)

    def keep_neurons(self, i: int, index: torch.Tensor) -> None:
        mlp = self.layers[i].mlp
        mlp.c_fc = _keep_outputs(mlp.c_fc, index)
        mlp.c_proj = _keep_inputs(mlp.c_proj, index)


def _layout(model: nn.Module):
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is not None and hasattr(layers[0], "attention") and hasattr(layers[0].attention, "self"):
        return _BertLayout(layers)
    layers = getattr(base, "h", None)
    if layers is not None and hasattr(layers[0], "attn") and hasattr(layers[0].attn, "c_attn"):
        if getattr(layers[0].attn, "is_cross_attention", False) or hasattr(layers[0], "crossattention"):
            raise InputError("structured pruning of GPT-2 with cross-attention is not supported")
        return _GPT2Layout(layers)
    raise InputError(f"structured pruning supports BERT-family encoders and GPT-2; {type(model).__name__} is "
                     "neither")


def _taylor_scores(model: nn.Module, dataloader, modules: list[nn.Module], group: int,
                   max_batches: int) -> list[torch.Tensor]:
    """Michel et al.'s estimate of how much the loss changes when a group of `group` consecutive input
    features of each module (a head, or one neuron) is gated off: |Σ W·∂L/∂W| over the group's weights,
    summed over batches. One [in_features // group] tensor per module."""
    model.eval()
    scores = [torch.zeros(_in_major(module, module.weight).shape[0] // group) for module in modules]
    device = next(model.parameters()).device
    for i, batch in enumerate(dataloader):
        if i >= max_batches:
            break
        model.zero_grad()
        model(**{k: v.to(device) for k, v in batch.items()}).loss.backward()
        for score, module in zip(scores, modules):
            gate_gradient = _in_major(module, module.weight * module.weight.grad).sum(dim=1).view(-1, group).sum(1)
            score += gate_gradient.abs().detach().cpu()
    model.zero_grad()
    return scores


def head_importance(model: nn.Module, dataloader=None, max_batches: int = 20) -> torch.Tensor:
    """[layers, heads] importance of each attention head. With a dataloader of labelled batches: the
    first-order Taylor estimate |Σ W·∂L/∂W| over the head's inputs of the attention output projection
    (Michel et al.: the gradient of a head's gate); without one: the L2 norm of those weights."""
    layout = _layout(model)
    counts = {layout.heads(i) for i in range(len(layout.layers))}
    if len(counts) > 1:
        raise InputError("this model's heads were already pruned (layers differ in head count); rank heads "
                         "before removing any")
    (n_heads, size), = counts
    outputs = [layout.attention_output(i) for i in range(len(layout.layers))]
    if dataloader is None:
        return torch.stack([_in_major(m, m.weight.detach()).reshape(n_heads, -1).norm(dim=1) for m in outputs])
    return torch.stack(_taylor_scores(model, dataloader, outputs, size, max_batches))


def remove_heads(model: nn.Module, heads_to_remove: dict[int, list[int]]) -> None:
    """Physically remove the given heads {layer: [head, ...]} from a BERT-family or GPT-2 model, in place.
    The heads left per layer are recorded in `model.config.hfopt_heads_per_layer` (what `apply_structure`
    replays when `load_compressed` rebuilds the model)."""
    layout = _layout(model)
    for layer_index, heads in heads_to_remove.items():
        current, size = layout.heads(int(layer_index))
        keep_heads = [h for h in range(current) if h not in set(heads)]
        if not keep_heads:
            raise InputError(f"pruning would remove every head of layer {layer_index}")
        index = torch.tensor([h * size + k for h in keep_heads for k in range(size)], dtype=torch.long)
        layout.keep_heads(int(layer_index), index, len(keep_heads))
    model.config.hfopt_heads_per_layer = [layout.heads(i)[0] for i in range(len(layout.layers))]


def apply_structure(model: nn.Module) -> nn.Module:
    """Shrink a freshly built model to the head counts and feed-forward sizes recorded in its config
    (`hfopt_heads_per_layer`, `hfopt_ffn_sizes`), so that a structurally pruned state dict loads into it."""
    heads = getattr(model.config, "hfopt_heads_per_layer", None)
    sizes = getattr(model.config, "hfopt_ffn_sizes", None)
    if heads or sizes:
        layout = _layout(model)
        for i in range(len(layout.layers)):
            current = layout.heads(i)[0]
            if heads and heads[i] < current:
                remove_heads(model, {i: list(range(heads[i], current))})
            if sizes and sizes[i] < _out_features(layout.ffn_input(i)):
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
    layout = _layout(model)
    for layer_index, neurons in keep.items():
        layout.keep_neurons(int(layer_index), torch.tensor(sorted(neurons), dtype=torch.long))
    model.config.hfopt_ffn_sizes = [_out_features(layout.ffn_input(i)) for i in range(len(layout.layers))]


def prune_ffn(model: nn.Module, amount: float, dataloader=None, max_batches: int = 20) -> list[int]:
    """Remove the least important `amount` of each layer's feed-forward neurons (importance: |w_in|·|w_out|
    of the neuron, or the Taylor estimate with a dataloader) and return the new sizes per layer."""
    check_amount(amount)
    layout = _layout(model)
    n_layers = len(layout.layers)
    if dataloader is not None:
        scores = _taylor_scores(model, dataloader, [layout.ffn_output(i) for i in range(n_layers)], 1, max_batches)
    else:
        scores = []
        for i in range(n_layers):
            w_in, w_out = layout.ffn_input(i), layout.ffn_output(i)
            scores.append(_in_major(w_in, w_in.weight.detach()).norm(dim=0)
                          * _in_major(w_out, w_out.weight.detach()).norm(dim=1))
    keep = {}
    for j, score in enumerate(scores):
        n_keep = max(1, len(score) - int(round(amount * len(score))))
        keep[j] = torch.topk(score, n_keep).indices.tolist()
    shrink_ffn(model, keep)
    return model.config.hfopt_ffn_sizes
