"""Weight sharing: merge transformer blocks into groups that hold one set of weights (W_new from W_1..W_n), then
train the merged model with the sharing in place.

Example::

    from hfopt.compression import share_layers
    share_layers(model, num_groups=3)                   # 6 blocks → 3 sets of weights, grouped by similarity
    share_layers(model, groups=[[0, 1], [2, 3]], init="central")
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..architectures import architecture, check_share_groups, share_blocks
from ..errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["INITS", "block_gram", "contiguous_groups", "share_layers"]

INITS = ("average", "central")


def _stack(model: nn.Module) -> nn.ModuleList:
    arch = architecture(model)
    arch.require_single_stack("weight sharing")
    ((_, stack),) = arch.stacks
    if getattr(model.config, "hfopt_shared_layers", None) or len({id(b) for b in stack}) < len(stack):
        raise InputError(
            f"the blocks of this {type(model).__name__} are already shared "
            f"({getattr(model.config, 'hfopt_shared_layers', None)}): share the unshared model"
        )
    return stack


def _float_tensors(block: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in block.state_dict().items() if v.is_floating_point()}


def _check_same_shapes(stack: nn.ModuleList, group: list[int]) -> None:
    shapes = [{k: v.shape for k, v in _float_tensors(stack[i]).items()} for i in group]
    for i, other in zip(group[1:], shapes[1:], strict=True):
        if other != shapes[0]:
            raise InputError(
                f"blocks {group[0]} and {i} have different shapes (structurally pruned differently): they cannot "
                "share one set of weights"
            )


@torch.no_grad()
def block_gram(model: nn.Module) -> torch.Tensor:
    """The Gram matrix G[i, j] = <w_i, w_j> of the blocks' weights (every floating-point tensor of a block,
    flattened), in float64, accumulated tensor by tensor so that no block is ever copied whole.

    Example::

        gram = block_gram(model)                    # [6, 6] for MiniLM-L6
    """
    stack = _stack(model)
    _check_same_shapes(stack, list(range(len(stack))))
    tensors = [_float_tensors(block) for block in stack]
    gram = torch.zeros(len(stack), len(stack), dtype=torch.float64)
    for key in tensors[0]:
        rows = torch.stack([t[key].detach().reshape(-1).to("cpu", torch.float64) for t in tensors])
        gram += rows @ rows.T
    return gram


def _segment_cost(gram: torch.Tensor, start: int, stop: int) -> float:
    """Σ‖w_i − mean‖² over blocks start..stop-1: what replacing them by their average changes."""
    block = gram[start:stop, start:stop]
    return float(block.diagonal().sum() - block.sum() / (stop - start))


def contiguous_groups(gram: torch.Tensor, num_groups: int) -> list[list[int]]:
    """Split blocks 0..n-1 into `num_groups` runs of adjacent blocks with the least total within-group squared
    distance to the group's average (exact, by dynamic programming over the Gram matrix of `block_gram`).

    Example::

        contiguous_groups(block_gram(model), 3)            # e.g. [[0, 1], [2, 3, 4], [5]]
    """
    n = gram.shape[0]
    if not 1 <= num_groups <= n:
        raise InputError(f"cannot share {n} blocks into {num_groups} groups: share_layers takes 1 to {n} groups")
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(num_groups + 1)]  # best[k][j]: blocks 0..j-1 in k groups
    cut = [[0] * (n + 1) for _ in range(num_groups + 1)]
    best[0][0] = 0.0
    for k in range(1, num_groups + 1):
        for j in range(k, n + 1):
            for i in range(k - 1, j):
                cost = best[k - 1][i] + _segment_cost(gram, i, j)
                if cost < best[k][j]:
                    best[k][j], cut[k][j] = cost, i
    groups, j = [], n
    for k in range(num_groups, 0, -1):
        groups.append(list(range(cut[k][j], j)))
        j = cut[k][j]
    return groups[::-1]


@torch.no_grad()
def share_layers(
    model: nn.Module,
    num_groups: int | None = None,
    groups: list[list[int]] | None = None,
    init: str = "average",
) -> list[list[int]]:
    """Merge the transformer blocks of a BERT-family encoder or GPT-2 into groups that share one set of weights,
    in place, and return the groups.

    Without `groups`, `num_groups` runs of adjacent blocks are chosen to be as similar as possible (least total
    squared distance of the members' weights to their average; see `contiguous_groups`). Each group's weights
    start as the members' average (`init="average"`) or as the member closest to it (`"central"`); the blocks
    of a group then are one module (`architectures.share_blocks`), so an optimizer step changes them together,
    `save_compressed` and `save_pretrained` store them once, and `load_compressed` / `hfopt.models.load_model`
    rebuild the sharing. Blocks in no group keep their own weights.

    Example::

        groups = share_layers(model, num_groups=3)          # 6 blocks → e.g. [[0, 1], [2, 3], [4, 5]]
        Trainer(model=model, ...).train()                   # recover by fine-tuning or distillation
    """
    if (num_groups is None) == (groups is None):
        raise ValueError("give share_layers num_groups or groups, not both or neither")
    if init not in INITS:
        raise InputError(f"share_layers init '{init}' is not one of {', '.join(INITS)}")
    stack = _stack(model)
    if groups is None:
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or not 1 <= num_groups <= len(stack):
            raise InputError(
                f"cannot share {len(stack)} blocks into {num_groups} groups: share_layers takes 1 to "
                f"{len(stack)} groups"
            )
        groups = contiguous_groups(block_gram(model), num_groups)
    groups = [list(group) for group in groups]
    check_share_groups(groups, len(stack))
    for group in groups:
        if len(group) < 2:
            continue
        _check_same_shapes(stack, group)
        members = [_float_tensors(stack[i]) for i in group]
        if init == "average":
            merged = {key: torch.stack([m[key] for m in members]).mean(0) for key in members[0]}
        else:
            average = {key: torch.stack([m[key] for m in members]).mean(0) for key in members[0]}
            distances = [sum(float((m[k] - average[k]).double().pow(2).sum()) for k in m) for m in members]
            central = members[distances.index(min(distances))]
            merged = {key: value.clone() for key, value in central.items()}
        first = _float_tensors(stack[group[0]])
        for key, value in merged.items():
            first[key].copy_(value)
    share_blocks(model, groups)
    logger.info("Shared %d blocks as %d sets of weights: %s", len(stack), _unique(stack), groups)
    return groups


def _unique(stack: nn.ModuleList) -> int:
    return len({id(block) for block in stack})
