"""Pruning: unstructured magnitude pruning on top of torch.nn.utils.prune, and structured pruning of attention
heads and feed-forward neurons (the linear layers physically shrink) of every family `hfopt.architectures`
knows: BERT, RoBERTa, ELECTRA, DeBERTa-v2, DistilBERT, GPT-2, Marian/BART (and T5's feed-forward layers).

Example::

    prune_magnitude(model, amount=0.5)
    prune_heads(model, amount=0.4, dataloader=batches)     # Taylor importance from labelled batches
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from ..architectures import (
    TASK_HEAD_PATTERNS,
    apply_structure,
    architecture,
    in_major,
    linear_layers,
    remove_heads,
    shrink_ffn,
)
from ..errors import InputError

__all__ = [
    "apply_structure",
    "check_amount",
    "head_importance",
    "prune_ffn",
    "prune_heads",
    "prune_magnitude",
    "remove_heads",
    "shrink_ffn",
    "sparsity",
]


def check_amount(amount: float, name: str = "amount") -> None:
    """A pruning fraction must lie in [0, 1)."""
    if not 0 <= amount < 1:
        raise InputError(f"pruning {name} must be in [0, 1), got {amount}")


def sparsity(model: nn.Module, exclude=TASK_HEAD_PATTERNS) -> dict[str, float]:
    """Fraction of zeros in each prunable weight, and `"global"` over all of them."""
    layers = {name: module.weight for name, module in linear_layers(model, exclude)}
    out = {name: float((w == 0).sum()) / w.numel() for name, w in layers.items()}
    total = sum(w.numel() for w in layers.values())
    out["global"] = float(sum((w == 0).sum() for w in layers.values())) / max(total, 1)
    return out


def prune_magnitude(
    model: nn.Module,
    amount: float | None = None,
    threshold: float | None = None,
    scope: str = "global",
    exclude=TASK_HEAD_PATTERNS,
) -> dict[str, float]:
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
    layers = [module for _, module in linear_layers(model, exclude)]
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


def _taylor_scores(
    model: nn.Module, dataloader, modules: list[nn.Module], group: int, max_batches: int
) -> list[torch.Tensor]:
    """Michel et al.'s estimate of how much the loss changes when a group of `group` consecutive input
    features of each module (a head, or one neuron) is gated off: |Σ W·∂L/∂W| over the group's weights,
    summed over batches. One [in_features // group] tensor per module."""
    model.eval()
    scores = [torch.zeros(in_major(module, module.weight).shape[0] // group) for module in modules]
    device = next(model.parameters()).device
    for i, batch in enumerate(dataloader):
        if i >= max_batches:
            break
        model.zero_grad()
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        if loss is None:
            raise InputError("importance scores need labelled batches (the model returned no loss)")
        loss.backward()
        for score, module in zip(scores, modules, strict=True):
            gate_gradient = in_major(module, module.weight * module.weight.grad).sum(dim=1).view(-1, group).sum(1)
            score += gate_gradient.abs().detach().cpu()
    model.zero_grad()
    return scores


def head_importance(model: nn.Module, dataloader=None, max_batches: int = 20) -> torch.Tensor:
    """[attention sites, heads] importance of each attention head (a site is one self- or cross-attention; one
    per layer in encoders). With a dataloader of labelled batches: the first-order Taylor estimate
    |Σ W·∂L/∂W| over the head's inputs of the attention output projection (Michel et al.: the gradient of a
    head's gate); without one: the L2 norm of those weights."""
    sites = architecture(model).attention_sites()
    counts = {(site.num_heads, site.head_size) for site in sites}
    if len(counts) > 1:
        raise InputError(
            "this model's heads were already pruned (attention layers differ in head count); rank "
            "heads before removing any"
        )
    ((n_heads, size),) = counts
    outputs = [site.output_projection for site in sites]
    if dataloader is None:
        return torch.stack([in_major(m, m.weight.detach()).reshape(n_heads, -1).norm(dim=1) for m in outputs])
    return torch.stack(_taylor_scores(model, dataloader, outputs, size, max_batches))


def _refuse_shared_blocks(model: nn.Module, what: str) -> None:
    groups = getattr(getattr(model, "config", None), "hfopt_shared_layers", None)
    if groups:
        raise InputError(f"{what} of a model whose blocks are shared ({groups}) is not supported")


def prune_heads(model: nn.Module, amount: float, dataloader=None) -> dict[int, list[int]]:
    """Remove the least important `amount` of all attention heads (globally ranked, at least one head kept
    per attention layer) and return {attention site: [removed heads]}. See `head_importance` for the ranking.

    Example::

        removed = prune_heads(model, amount=0.4, dataloader=trainer.get_eval_dataloader())
    """
    check_amount(amount)
    _refuse_shared_blocks(model, "attention-head pruning")
    scores = head_importance(model, dataloader)
    n_sites, n_heads = scores.shape
    order = sorted((float(scores[s, h]), s, h) for s in range(n_sites) for h in range(n_heads))
    budget, removed = int(round(amount * n_sites * n_heads)), {}
    for _, site, head in order:
        if budget == 0:
            break
        if len(removed.get(site, [])) < n_heads - 1:
            removed.setdefault(site, []).append(head)
            budget -= 1
    removed = {site: sorted(heads) for site, heads in removed.items()}
    remove_heads(model, removed)
    return removed


def prune_ffn(model: nn.Module, amount: float, dataloader=None, max_batches: int = 20) -> list[int]:
    """Remove the least important `amount` of each feed-forward block's neurons (importance: |w_in|·|w_out|
    of the neuron, or the Taylor estimate with a dataloader) and return the new sizes per block."""
    check_amount(amount)
    _refuse_shared_blocks(model, "feed-forward pruning")
    sites = architecture(model).ffn_sites()
    if dataloader is not None:
        scores = _taylor_scores(model, dataloader, [site.output_projection for site in sites], 1, max_batches)
    else:
        scores = []
        for site in sites:
            w_in, w_out = site.input_projection, site.output_projection
            scores.append(
                in_major(w_in, w_in.weight.detach()).norm(dim=0) * in_major(w_out, w_out.weight.detach()).norm(dim=1)
            )
    keep = {}
    for j, score in enumerate(scores):
        n_keep = max(1, len(score) - int(round(amount * len(score))))
        keep[j] = torch.topk(score, n_keep).indices.tolist()
    shrink_ffn(model, keep)
    return model.config.hfopt_ffn_sizes
