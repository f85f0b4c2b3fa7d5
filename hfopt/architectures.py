"""Where a model family keeps its transformer blocks, attention heads, feed-forward layers, embeddings and task
heads: the one place freezing, distillation, pruning and weight sharing ask.

Families are recognised by the shape of their blocks, so every checkpoint of a family works (MiniLM is BERT,
XLM-R is RoBERTa, opus-mt is Marian):

| family | models | blocks | heads | FFN | one stack |
|---|---|---|---|---|---|
| bert | BERT, RoBERTa, ELECTRA, XLM-R, MiniLM | `encoder.layer` | yes | yes | yes |
| deberta-v2 | DeBERTa-v2/v3 | `encoder.layer` | yes | yes | yes |
| distilbert | DistilBERT | `transformer.layer` | yes | yes | yes |
| gpt2 | GPT-2, DistilGPT-2 | `h` | yes | yes | yes |
| bart | Marian, BART, mBART | `encoder.layers`, `decoder.layers` | yes | yes | no |
| t5 | T5, mT5, Flan-T5 | `encoder.block`, `decoder.block` | no (heads share one position bias) | yes | no |

Example::

    arch = architecture(model)
    arch.family, [name for name, _ in arch.blocks()]        # "bert", ["bert.encoder.layer.0", ...]
    arch.attention_sites()[0].num_heads                       # 12
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .errors import InputError

__all__ = [
    "EMBEDDING_PATTERN",
    "TASK_HEAD_PATTERNS",
    "Architecture",
    "AttentionSite",
    "FFNSite",
    "PrunedVocabularyEmbedding",
    "apply_sharing",
    "apply_structure",
    "architecture",
    "check_share_groups",
    "is_embedding",
    "keep_vocabulary",
    "linear_layers",
    "remove_heads",
    "share_blocks",
    "shrink_ffn",
    "transformer_blocks",
]

EMBEDDING_PATTERN = re.compile(r"(^|\.)(embeddings|embed_tokens|embed_positions|shared|wte|wpe)(\.|$)")
# Task heads: excluded from pruning; their weights must come from a checkpoint for a model used as it is.
TASK_HEAD_PATTERNS = (r"(^|\.)(classifier|lm_head|score|qa_outputs|pre_classifier)(\.|$)",)


def is_embedding(name: str) -> bool:
    """Whether a parameter or module name belongs to the embeddings (token, position, shared tables)."""
    return bool(EMBEDDING_PATTERN.search(name))


def linear_layers(model: nn.Module, exclude=TASK_HEAD_PATTERNS) -> list[tuple[str, nn.Module]]:
    """(name, module) of every nn.Linear / GPT-2 Conv1D whose name matches none of the `exclude` patterns:
    the weight matrices of a transformer without its task head (embeddings and norms are not Linear)."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, Conv1D)) and not any(re.search(p, name) for p in exclude)
    ]


# --- slicing projections ---------------------------------------------------------------------------------------
# Every projection is an nn.Linear (weight [out, in]) or a GPT-2 Conv1D (weight [in, out]); these helpers slice
# either kind along its inputs or outputs.


def in_major(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` (the module's weight or its gradient) as [in_features, out_features]."""
    return tensor if isinstance(module, Conv1D) else tensor.t()


def out_features(module: nn.Module) -> int:
    return module.weight.shape[1] if isinstance(module, Conv1D) else module.out_features


def keep_outputs(module: nn.Module, index: torch.Tensor) -> nn.Module:
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


def keep_inputs(module: nn.Module, index: torch.Tensor) -> nn.Module:
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


# --- attention heads and feed-forward neurons -------------------------------------------------------------------


@dataclass
class AttentionSite:
    """One multi-head attention: the projections that produce per-head features (query, key, value), the one
    that reads them (the output projection), and the attributes that hold its head count.

    Args:
        name: the qualified name of the module holding the projections.
        module: that module.
        inputs: attribute names of the projections whose outputs are per-head features.
        output_owner: the module holding the output projection.
        output: the output projection's attribute name.
        head_attrs: attributes holding the number of heads; size_attrs: those holding heads × head size.
        fused: query, key and value in one projection (GPT-2's c_attn: [q | k | v]).
    """

    name: str
    module: nn.Module
    inputs: tuple[str, ...]
    output_owner: nn.Module
    output: str
    head_size: int
    head_attrs: tuple[str, ...] = ()
    size_attrs: tuple[str, ...] = ()
    fused: bool = False

    @property
    def output_projection(self) -> nn.Module:
        return getattr(self.output_owner, self.output)

    @property
    def num_heads(self) -> int:
        return in_major(self.output_projection, self.output_projection.weight).shape[0] // self.head_size

    def keep_heads(self, heads: list[int]) -> None:
        """Keep only the given heads, in place: every projection physically shrinks."""
        size = self.head_size
        index = torch.tensor([h * size + k for h in heads for k in range(size)], dtype=torch.long)
        for attr in self.inputs:
            projection = getattr(self.module, attr, None)
            if projection is None:
                continue
            if self.fused:
                width = out_features(projection) // 3
                fused_index = torch.cat([index + k * width for k in range(3)])
                setattr(self.module, attr, keep_outputs(projection, fused_index))
            else:
                setattr(self.module, attr, keep_outputs(projection, index))
        setattr(self.output_owner, self.output, keep_inputs(self.output_projection, index))
        for attr in self.head_attrs:
            setattr(self.module, attr, len(heads))
        for attr in self.size_attrs:
            setattr(self.module, attr, len(index))


@dataclass
class FFNSite:
    """One feed-forward block: the projections into the intermediate neurons and the one back out.

    Args:
        name: the qualified name of the block.
        input_owner / inputs: the module and attribute names of the projections into the neurons (two for
            gated FFNs such as T5 v1.1).
        output_owner / output: the module and attribute name of the projection out of them.
    """

    name: str
    input_owner: nn.Module
    inputs: tuple[str, ...]
    output_owner: nn.Module
    output: str

    @property
    def input_projection(self) -> nn.Module:
        return getattr(self.input_owner, self.inputs[0])

    @property
    def output_projection(self) -> nn.Module:
        return getattr(self.output_owner, self.output)

    @property
    def size(self) -> int:
        return out_features(self.input_projection)

    def keep_neurons(self, neurons: list[int]) -> None:
        index = torch.tensor(sorted(neurons), dtype=torch.long)
        for attr in self.inputs:
            setattr(self.input_owner, attr, keep_outputs(getattr(self.input_owner, attr), index))
        setattr(self.output_owner, self.output, keep_inputs(self.output_projection, index))


# --- families --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Family:
    name: str
    matches: Callable[[nn.Module], bool]
    attention: Callable[[str, nn.Module], list[AttentionSite]] | None
    ffn: Callable[[str, nn.Module], list[FFNSite]]


def _bert_attention(name: str, block) -> list[AttentionSite]:
    s = block.attention.self
    return [
        AttentionSite(
            f"{name}.attention",
            s,
            ("query", "key", "value"),
            block.attention.output,
            "dense",
            s.attention_head_size,
            ("num_attention_heads",),
            ("all_head_size",),
        )
    ]


def _deberta_attention(name: str, block) -> list[AttentionSite]:
    s = block.attention.self
    return [
        AttentionSite(
            f"{name}.attention",
            s,
            ("query_proj", "key_proj", "value_proj", "pos_key_proj", "pos_query_proj"),
            block.attention.output,
            "dense",
            s.attention_head_size,
            ("num_attention_heads",),
            ("all_head_size",),
        )
    ]


def _distilbert_attention(name: str, block) -> list[AttentionSite]:
    a = block.attention
    return [
        AttentionSite(
            f"{name}.attention", a, ("q_lin", "k_lin", "v_lin"), a, "out_lin", a.attention_head_size, ("n_heads",)
        )
    ]


def _gpt2_attention(name: str, block) -> list[AttentionSite]:
    a = block.attn
    if getattr(a, "is_cross_attention", False) or hasattr(block, "crossattention"):
        raise InputError("structured pruning of GPT-2 with cross-attention is not supported")
    return [
        AttentionSite(
            f"{name}.attn", a, ("c_attn",), a, "c_proj", a.head_dim, ("num_heads",), ("split_size",), fused=True
        )
    ]


def _bart_attention(name: str, block) -> list[AttentionSite]:
    sites = []
    for attr in ("self_attn", "encoder_attn"):
        a = getattr(block, attr, None)
        if a is not None:
            sites.append(
                AttentionSite(
                    f"{name}.{attr}", a, ("q_proj", "k_proj", "v_proj"), a, "out_proj", a.head_dim, ("num_heads",)
                )
            )
    return sites


def _t5_ffn(name: str, block) -> list[FFNSite]:
    dense = block.layer[-1].DenseReluDense
    inputs = ("wi_0", "wi_1") if hasattr(dense, "wi_0") else ("wi",)
    return [FFNSite(f"{name}.layer.{len(block.layer) - 1}.DenseReluDense", dense, inputs, dense, "wo")]


FAMILIES = (
    _Family(
        "bert",
        lambda b: hasattr(getattr(getattr(b, "attention", None), "self", None), "query"),
        _bert_attention,
        lambda n, b: [FFNSite(n, b.intermediate, ("dense",), b.output, "dense")],
    ),
    _Family(
        "deberta-v2",
        lambda b: hasattr(getattr(getattr(b, "attention", None), "self", None), "query_proj"),
        _deberta_attention,
        lambda n, b: [FFNSite(n, b.intermediate, ("dense",), b.output, "dense")],
    ),
    _Family(
        "distilbert",
        lambda b: hasattr(getattr(b, "attention", None), "q_lin"),
        _distilbert_attention,
        lambda n, b: [FFNSite(f"{n}.ffn", b.ffn, ("lin1",), b.ffn, "lin2")],
    ),
    _Family(
        "gpt2",
        lambda b: hasattr(getattr(b, "attn", None), "c_attn"),
        _gpt2_attention,
        lambda n, b: [FFNSite(f"{n}.mlp", b.mlp, ("c_fc",), b.mlp, "c_proj")],
    ),
    _Family(
        "bart",
        lambda b: hasattr(getattr(b, "self_attn", None), "q_proj") and hasattr(b, "fc1"),
        _bart_attention,
        lambda n, b: [FFNSite(n, b, ("fc1",), b, "fc2")],
    ),
    _Family("t5", lambda b: hasattr(getattr(b, "layer", [None])[0], "SelfAttention"), None, _t5_ffn),
)
SUPPORTED = "BERT, RoBERTa, ELECTRA, DeBERTa-v2, DistilBERT, GPT-2, Marian/BART and T5"


class Architecture:
    """The transformer stacks of a model of a known family (see the module docstring) and their parts.

    Example::

        arch = architecture(model)
        for site in arch.attention_sites(): print(site.name, site.num_heads)
    """

    def __init__(self, model: nn.Module, family: _Family, stacks: list[tuple[str, nn.ModuleList]]):
        self.model, self.family_spec, self.stacks = model, family, stacks

    @property
    def family(self) -> str:
        return self.family_spec.name

    @property
    def single_stack(self) -> bool:
        return len(self.stacks) == 1

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """(qualified name, block) of every transformer block, the encoder's before the decoder's, bottom first."""
        return [(f"{name}.{i}", block) for name, stack in self.stacks for i, block in enumerate(stack)]

    def attention_sites(self) -> list[AttentionSite]:
        """Every multi-head attention, block by block (self- then cross-attention in decoders)."""
        if self.family_spec.attention is None:
            raise InputError(
                f"attention-head pruning is not supported for {self.family} models (their heads share "
                "one relative position bias); prune feed-forward neurons instead"
            )
        return [site for name, block in self.blocks() for site in self.family_spec.attention(name, block)]

    def ffn_sites(self) -> list[FFNSite]:
        """Every feed-forward block, bottom first."""
        return [site for name, block in self.blocks() for site in self.family_spec.ffn(name, block)]

    def require_single_stack(self, feature: str) -> None:
        if not self.single_stack:
            raise InputError(
                f"{feature} supports single-stack models (BERT, RoBERTa, ELECTRA, DeBERTa-v2, "
                f"DistilBERT, GPT-2); {type(self.model).__name__} is an encoder-decoder"
            )


def _find_stacks(model: nn.Module) -> tuple[_Family, list[tuple[str, nn.ModuleList]]] | None:
    for family in FAMILIES:
        stacks = [
            (name, module)
            for name, module in model.named_modules()
            if isinstance(module, nn.ModuleList) and len(module) and family.matches(module[0])
        ]
        if stacks:
            return family, stacks
    return None


def architecture(model: nn.Module) -> Architecture:
    """The `Architecture` of a model of a supported family; an unsupported one is an InputError naming them."""
    found = _find_stacks(model)
    if found is None:
        raise InputError(
            f"{type(model).__name__} is not a model family hfopt knows the structure of; supported: {SUPPORTED}"
        )
    return Architecture(model, *found)


def transformer_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's transformer blocks, bottom first, as (qualified name, block): those of a known family (the
    encoder's before the decoder's), else the longest `nn.ModuleList` of any other model."""
    found = _find_stacks(model)
    if found is not None:
        return Architecture(model, *found).blocks()
    lists = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.ModuleList)]
    if not lists:
        raise InputError(f"{type(model).__name__} has no nn.ModuleList of transformer blocks")
    name, blocks = max(lists, key=lambda item: len(item[1]))
    return [(f"{name}.{i}", block) for i, block in enumerate(blocks)]


# --- structure records: replayed when a pruned model is rebuilt from its config ----------------------------------


def remove_heads(model: nn.Module, heads_to_remove: dict[int, list[int]]) -> None:
    """Physically remove the given heads {attention site: [head, ...]} in place (sites numbered as
    `architecture(model).attention_sites()`: one per layer in encoders and GPT-2). The heads left per site are
    recorded in `model.config.hfopt_heads_per_layer` (what `apply_structure` replays when `load_compressed`
    rebuilds the model)."""
    sites = architecture(model).attention_sites()
    for index, heads in heads_to_remove.items():
        site = sites[int(index)]
        keep = [h for h in range(site.num_heads) if h not in set(heads)]
        if not keep:
            raise InputError(f"pruning would remove every head of {site.name}")
        site.keep_heads(keep)
    model.config.hfopt_heads_per_layer = [site.num_heads for site in sites]


def shrink_ffn(model: nn.Module, keep: dict[int, list[int]]) -> None:
    """Keep only the given intermediate neurons {feed-forward block: [neuron, ...]} in place; the sizes are
    recorded in `model.config.hfopt_ffn_sizes`."""
    sites = architecture(model).ffn_sites()
    for index, neurons in keep.items():
        sites[int(index)].keep_neurons(neurons)
    model.config.hfopt_ffn_sizes = [site.size for site in sites]


class PrunedVocabularyEmbedding(nn.Module):
    """An input embedding that keeps the rows of part of the vocabulary. Token ids stay the tokenizer's: a
    persistent int32 index maps each id to its row, and ids outside the kept part to the unknown token's row.

    `weight` is the kept rows (what quantization and optimizers see); `num_embeddings` is the tokenizer's full
    vocabulary, as before.
    """

    def __init__(self, num_embeddings: int, kept: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.register_buffer("rows", torch.zeros(num_embeddings, dtype=torch.int32))
        self.embedding = nn.Embedding(kept, embedding_dim)
        self.padding_idx = padding_idx

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight

    @property
    def num_embeddings(self) -> int:
        return self.rows.numel()

    @property
    def embedding_dim(self) -> int:
        return self.embedding.embedding_dim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.rows[input_ids].long())


def keep_vocabulary(model: nn.Module, keep: list[int], unknown_id: int) -> PrunedVocabularyEmbedding:
    """Keep only the input-embedding rows of the token ids `keep` (the unknown token's included), in place;
    other ids embed as the unknown token. Recorded in `model.config.hfopt_vocabulary` (replayed by
    `apply_structure`). Models whose output layer shares the input embeddings (language models, most
    translation models) predict over the whole vocabulary, so they are refused."""
    embedding = model.get_input_embeddings()
    if isinstance(embedding, PrunedVocabularyEmbedding):
        raise InputError("the vocabulary of this model is pruned already")
    if not isinstance(embedding, nn.Embedding):
        raise InputError(f"{type(model).__name__}'s input embedding is a {type(embedding).__name__}, not an Embedding")
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and output.weight is embedding.weight:
        raise InputError(
            f"{type(model).__name__}'s output layer is tied to its input embeddings (it predicts over the whole "
            "vocabulary): vocabulary pruning is for classifiers and other encoders"
        )
    keep = sorted({int(i) for i in keep} | {int(unknown_id)})
    if keep[0] < 0 or keep[-1] >= embedding.num_embeddings:
        raise InputError(f"token ids to keep must lie in 0..{embedding.num_embeddings - 1}")
    pruned = PrunedVocabularyEmbedding(embedding.num_embeddings, len(keep), embedding.embedding_dim)
    pruned.to(device=embedding.weight.device, dtype=embedding.weight.dtype)
    index = torch.tensor(keep, device=embedding.weight.device)
    with torch.no_grad():
        pruned.embedding.weight.copy_(embedding.weight[index])
        pruned.rows.fill_(keep.index(int(unknown_id)))
        pruned.rows[index] = torch.arange(len(keep), dtype=torch.int32, device=index.device)
    pruned.padding_idx = embedding.padding_idx
    model.set_input_embeddings(pruned)
    model.config.hfopt_vocabulary = {"kept": len(keep), "unknown_id": int(unknown_id)}
    return pruned


def apply_structure(model: nn.Module) -> nn.Module:
    """Shrink a freshly built model to the structure recorded in its config (`hfopt_heads_per_layer`,
    `hfopt_ffn_sizes`, `hfopt_vocabulary`), so that a structurally pruned state dict loads into it."""
    vocabulary = getattr(model.config, "hfopt_vocabulary", None)
    if vocabulary and not isinstance(model.get_input_embeddings(), PrunedVocabularyEmbedding):
        embedding = model.get_input_embeddings()
        pruned = PrunedVocabularyEmbedding(embedding.num_embeddings, vocabulary["kept"], embedding.embedding_dim)
        pruned.to(device=embedding.weight.device, dtype=embedding.weight.dtype)
        pruned.padding_idx = embedding.padding_idx
        model.set_input_embeddings(pruned)
    heads = getattr(model.config, "hfopt_heads_per_layer", None)
    sizes = getattr(model.config, "hfopt_ffn_sizes", None)
    if heads:
        sites = architecture(model).attention_sites()
        if len(heads) != len(sites):
            raise InputError(
                f"the config records head counts for {len(heads)} attention layers; the model has {len(sites)}"
            )
        pairs = enumerate(zip(heads, sites, strict=True))
        remove_heads(model, {i: list(range(n, site.num_heads)) for i, (n, site) in pairs if n < site.num_heads})
    if sizes:
        sites = architecture(model).ffn_sites()
        if len(sizes) != len(sites):
            raise InputError(
                f"the config records sizes for {len(sizes)} feed-forward layers; the model has {len(sites)}"
            )
        pairs = enumerate(zip(sizes, sites, strict=True))
        shrink_ffn(model, {i: list(range(n)) for i, (n, site) in pairs if n < site.size})
    return model


def share_blocks(model: nn.Module, groups: list[list[int]]) -> None:
    """Make the blocks of each group one module (the group's first block), in place: they then hold one set of
    weights, which trains as one. Groups are 0-based block indices of a single-stack model; the grouping is
    recorded in `model.config.hfopt_shared_layers` (what `apply_sharing` replays).

    `save_pretrained` (and so the Trainer's checkpoints) store the shared weights once: the later members' keys
    are the model's `_keys_to_ignore_on_save`. A block shared by several positions learns at each call which
    position it runs at (a forward pre-hook sets its attention's `layer_idx`), so a KV cache keeps one slot per
    position and incremental decoding of a shared GPT-2 matches a full forward pass.

    Example::

        share_blocks(model, [[0, 1], [2, 3]])      # 4 blocks, 2 sets of weights
    """
    arch = architecture(model)
    arch.require_single_stack("weight sharing")
    ((stack_name, stack),) = arch.stacks
    check_share_groups(groups, len(stack))
    owner = model.get_submodule(stack_name.rpartition(".")[0]) if "." in stack_name else model
    ignored = set(getattr(model, "_keys_to_ignore_on_save", None) or ())
    for group in groups:
        first = stack[group[0]]
        for i in group[1:]:
            stack[i] = first
            ignored |= {f"{stack_name}.{i}.{key}" for key in first.state_dict()}
        if len(group) > 1 and _layer_index_modules(first):
            _LayerIndexPerPosition.attach(owner, first, sorted(group))
    if hasattr(model, "_keys_to_ignore_on_save"):  # transformers' list of keys save_pretrained leaves out
        model._keys_to_ignore_on_save = ignored
    model.config.hfopt_shared_layers = [list(group) for group in groups if len(group) > 1]


def check_share_groups(groups: list[list[int]], num_blocks: int) -> None:
    """An InputError (one line) for groups of blocks that overlap or name blocks outside 0..num_blocks-1.

    Example::

        check_share_groups([[0, 1], [1, 2]], 4)     # InputError: shared-layer groups overlap: block(s) [1] ...
    """
    seen: set[int] = set()
    for group in groups:
        if not group or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_blocks for i in group):
            raise InputError(f"shared-layer group {group} names blocks outside 0..{num_blocks - 1}")
        if len(set(group)) < len(group) or seen & set(group):
            twice = sorted((seen & set(group)) | {i for i in group if group.count(i) > 1})
            raise InputError(f"shared-layer groups overlap: block(s) {twice} are in two groups")
        seen |= set(group)


def _layer_index_modules(block: nn.Module) -> list[nn.Module]:
    return [m for m in block.modules() if isinstance(getattr(m, "layer_idx", None), int)]


class _LayerIndexPerPosition:
    """Forward pre-hooks for a block shared by several positions of its stack: the stack's owner resets a call
    count at each forward, and each call of the block sets `layer_idx` (the KV-cache slot) of its attention to
    the position it runs at. The hooks read the modules they are called with, so deep copies keep working."""

    def __init__(self, positions: list[int]):
        self.positions, self.calls = positions, 0

    @classmethod
    def attach(cls, owner: nn.Module, block: nn.Module, positions: list[int]) -> None:
        old = [hook for hook in block._forward_pre_hooks.values() if isinstance(hook, cls)]
        for module in (owner, block):  # replaying the sharing replaces the hooks of an earlier one
            for key, hook in list(module._forward_pre_hooks.items()):
                if any(hook is h or getattr(hook, "__self__", None) is h for h in old):
                    del module._forward_pre_hooks[key]
        hook = cls(positions)
        owner.register_forward_pre_hook(hook.reset)
        block.register_forward_pre_hook(hook)

    def reset(self, module, args) -> None:
        self.calls = 0

    def __call__(self, block, args) -> None:
        index = self.positions[self.calls % len(self.positions)]
        self.calls += 1
        for module in _layer_index_modules(block):
            module.layer_idx = index


def apply_sharing(model: nn.Module) -> nn.Module:
    """Replay the block sharing recorded in the config (`hfopt_shared_layers`) on a freshly built model."""
    groups = getattr(model.config, "hfopt_shared_layers", None)
    if groups:
        share_blocks(model, groups)
    return model
