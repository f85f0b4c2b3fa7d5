"""Causal language-modelling data: the text column, the block size, token examples of text, prompt/completion or
chat data (completion-only labels), and their arrangement in rows (none, blocks, padding-free packing).

Example::

    raw, sources = load_raw_datasets(data_args, extensions=LM_EXTENSIONS)
    column = detect_text_column(raw, sources)
    raw = drop_blank_texts(raw, column, sources)
    blocks = tokenize_for_causal_lm(raw, tokenizer, column, block_size=128, sources=sources)
"""

from __future__ import annotations

import bisect
import logging

from datasets import Dataset, DatasetDict

from ..errors import InputError
from .chat import render_conversation
from .files import DataSources, check_text_dtype, tokenize_splits

logger = logging.getLogger(__name__)

__all__ = [
    "LM_EXTENSIONS",
    "arrange_examples",
    "best_fit_decreasing",
    "check_block_size",
    "check_packed_attention",
    "detect_text_column",
    "drop_blank_texts",
    "packed_collator",
    "tokenize_for_causal_lm",
    "tokenize_for_sft",
]

LM_EXTENSIONS = (".txt", ".json", ".jsonl", ".parquet", ".arrow")


def detect_text_column(raw: DatasetDict, sources: DataSources, name: str | None = None) -> str:
    """The column holding the text: `name` if given, else `text` (what .txt files load as), else the only
    string column. Every split must have it."""
    first = "train" if "train" in raw else next(iter(raw))
    found = raw[first].column_names
    if name is None:
        strings = [c for c, f in raw[first].features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
        name = "text" if "text" in found else (strings[0] if len(strings) == 1 else None)
        if name is None:
            raise InputError(
                f"{sources.of(first)}: no text column found among {', '.join(found)}; name it with --text_column_names"
            )
    for split, dataset in raw.items():
        if name not in dataset.column_names:
            raise InputError(
                f"{sources.of(split)} has no column '{name}'; columns found: {', '.join(dataset.column_names)}"
            )
    return name


def drop_blank_texts(raw: DatasetDict, text_column: str, sources: DataSources) -> DatasetDict:
    """Remove rows whose text is blank (the empty lines of .txt files); a split left with none is an error."""
    check_text_dtype(raw, [text_column], sources)
    kept = raw.filter(lambda row: isinstance(row[text_column], str) and bool(row[text_column].strip()))
    for split, dataset in kept.items():
        if len(dataset) == 0:
            raise InputError(f"{sources.of(split)} holds no text in column '{text_column}' (only blank rows)")
    return kept


def check_block_size(block_size: int | None, config, tokenizer) -> int:
    """The block size to use: the one asked for (error if the model's context is shorter), else
    min(1024, context)."""
    context = (
        next(
            (
                getattr(config, k)
                for k in ("n_positions", "max_position_embeddings", "n_ctx")
                if getattr(config, k, None)
            ),
            None,
        )
        or tokenizer.model_max_length
    )
    if block_size is None:
        return min(1024, context)
    if block_size > context:
        raise InputError(f"block_size {block_size} is larger than the model's context of {context} tokens")
    return block_size


def tokenize_for_causal_lm(
    raw: DatasetDict,
    tokenizer,
    text_column: str,
    block_size: int,
    sources: DataSources,
    packing: str | bool = "blocks",
    num_proc: int | None = None,
) -> DatasetDict:
    """Token examples of plain text for causal LM training, labels = input_ids (the model shifts them).

    `packing="blocks"` (or True): texts (each ended by eos) are concatenated and cut into full `block_size`
    blocks; the remainder shorter than a block is dropped. `"none"` (or False): one example per text, truncated
    to block_size and left unpadded; `DataCollatorForSeq2Seq` then pads labels with -100 so padding never counts.
    `"padding_free"`: whole texts packed into rows of at most block_size (see `arrange_examples`).
    Call it inside `training_args.main_process_first()`.
    """
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def encode(batch):
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + eos for t in batch[text_column]]
        return {"input_ids": ids, "labels": [list(x) for x in ids]}

    examples = tokenize_splits(raw, encode, num_proc)
    return arrange_examples(examples, packing, block_size, sources, num_proc)


def tokenize_for_sft(
    raw: DatasetDict,
    tokenizer,
    data_format: str,
    block_size: int,
    sources: DataSources,
    packing: str | bool = "padding_free",
    completion_only_loss: bool = True,
    num_proc: int | None = None,
) -> DatasetDict:
    """Token examples of instruction data (`prompt`/`completion` columns) or chat data (`messages`, rendered with
    the tokenizer's chat template), arranged by `packing` as in `tokenize_for_causal_lm`.

    Prompt/completion: prompt tokens (with the tokenizer's special tokens, e.g. a bos), completion tokens, eos.
    Chat: the rendered conversation. With `completion_only_loss` the labels are -100 on the prompt and on the
    system/user turns and template markup between assistant turns (`render_conversation` finds them); every
    assistant turn, with its end-of-turn marker, is learnt. With packing "none" or "padding_free", an example
    whose first `block_size` tokens hold nothing to learn is an error naming file, row and column.
    Call it inside `training_args.main_process_first()`.

    Example::

        rows = tokenize_for_sft(raw, tokenizer, "messages", 256, sources, packing="padding_free")
        collator = packed_collator(tokenizer)
    """
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def encode(batch):
        ids, labels = [], []
        if data_format == "prompt_completion":
            for prompt, completion in zip(batch["prompt"], batch["completion"], strict=True):
                p = tokenizer(prompt)["input_ids"] if prompt else []
                c = tokenizer(completion, add_special_tokens=False)["input_ids"] + eos
                ids.append(p + c)
                labels.append(([-100] * len(p) if completion_only_loss else list(p)) + list(c))
        else:
            for messages in batch["messages"]:
                if completion_only_loss:  # the assistant spans are needed only to mask the rest
                    text, spans = render_conversation(tokenizer, messages)
                else:
                    text, spans = tokenizer.apply_chat_template(messages, tokenize=False), []
                encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
                x = encoded["input_ids"]
                if completion_only_loss:
                    learnt = [any(a <= start < b for a, b in spans) for start, _ in encoded["offset_mapping"]]
                    labels.append([t if keep else -100 for t, keep in zip(x, learnt, strict=True)])
                else:
                    labels.append(list(x))
                ids.append(x)
        return {"input_ids": ids, "labels": labels}

    examples = tokenize_splits(raw, encode, num_proc)
    if completion_only_loss and _normalise_packing(packing) != "blocks":
        column = "prompt" if data_format == "prompt_completion" else "messages"
        _check_learnable(examples, block_size, sources, column)
    return arrange_examples(examples, packing, block_size, sources, num_proc)


def _check_learnable(examples: DatasetDict, block_size: int, sources: DataSources, column: str) -> None:
    """Error on the first example whose first block_size tokens predict no label (the first token is never a
    target: the model shifts the labels)."""
    for split, dataset in examples.items():
        for i, labels in enumerate(dataset["labels"]):
            if all(label == -100 for label in labels[1:block_size]):
                prompt = next((k for k, label in enumerate(labels) if label != -100), len(labels))
                raise InputError(
                    f"{sources.of(split)} row {i + 1}, column '{column}': its prompt is {prompt} tokens, so "
                    f"block_size {block_size} leaves nothing of its completion to learn with --completion_only_loss; "
                    "raise --block_size or shorten the prompt"
                )


PACKING_MODES = ("none", "blocks", "padding_free")


def _normalise_packing(packing: str | bool) -> str:
    if packing is True:
        return "blocks"
    if packing is False:
        return "none"
    if packing not in PACKING_MODES:
        raise ValueError(f"packing must be one of {', '.join(PACKING_MODES)}, got {packing!r}")
    return packing


def arrange_examples(
    examples: DatasetDict, packing: str | bool, block_size: int, sources: DataSources, num_proc: int | None = None
) -> DatasetDict:
    """Token examples (`input_ids`, `labels`) arranged for training by `packing`:

    - "none": one example per row, truncated to block_size (a warning counts them), with an attention mask;
      padded per batch by `seq2seq_collator`.
    - "blocks": all examples of a map batch concatenated and cut into full block_size rows, labels kept (so
      attention crosses examples: right for raw text).
    - "padding_free": whole examples packed into rows of at most block_size tokens by best-fit decreasing (an
      example longer than a row is truncated, a warning counts them), with `position_ids` restarting at 0 for
      each example, so that `packed_collator` batches them and attention never crosses examples.

    Example::

        rows = arrange_examples(examples, "padding_free", 128, sources)
        rows["train"][0]["position_ids"]      # [0, 1, ..., 17, 0, 1, ..., 40, 0, ...]
    """
    packing = _normalise_packing(packing)
    if packing == "blocks":

        def cut(batch):
            flat_ids = [t for x in batch["input_ids"] for t in x]
            flat_labels = [t for x in batch["labels"] for t in x]
            usable = len(flat_ids) // block_size * block_size
            starts = range(0, usable, block_size)
            return {
                "input_ids": [flat_ids[i : i + block_size] for i in starts],
                "attention_mask": [[1] * block_size for _ in starts],
                "labels": [flat_labels[i : i + block_size] for i in starts],
            }

        arranged = tokenize_splits(examples, cut, num_proc)
        for split, dataset in arranged.items():
            if len(dataset) == 0:
                raise InputError(
                    f"{sources.of(split)} holds fewer than block_size={block_size} tokens; "
                    "give more text or a smaller --block_size"
                )
        return arranged

    arranged = DatasetDict()
    for split, dataset in examples.items():
        lengths = [len(x) for x in dataset["input_ids"]]
        too_long = sum(n > block_size for n in lengths)
        if too_long:
            logger.warning(
                "%d of %d examples of %s are longer than block_size %d tokens and were truncated",
                too_long,
                len(lengths),
                sources.of(split),
                block_size,
            )
        if packing == "none":

            def truncate(batch):
                ids = [x[:block_size] for x in batch["input_ids"]]
                return {
                    "input_ids": ids,
                    "attention_mask": [[1] * len(x) for x in ids],
                    "labels": [x[:block_size] for x in batch["labels"]],
                }

            arranged[split] = dataset.map(
                truncate, batched=True, num_proc=num_proc, remove_columns=dataset.column_names, desc=f"Rows of {split}"
            )
            continue
        ids, labels = dataset["input_ids"], dataset["labels"]
        rows = {"input_ids": [], "labels": [], "position_ids": []}
        for members in best_fit_decreasing([min(n, block_size) for n in lengths], block_size):
            rows["input_ids"].append([t for k in members for t in ids[k][:block_size]])
            rows["labels"].append([t for k in members for t in labels[k][:block_size]])
            rows["position_ids"].append([p for k in members for p in range(min(lengths[k], block_size))])
        arranged[split] = Dataset.from_dict(rows)
    return arranged


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins of item indices, each bin's lengths summing to at most `capacity`: items taken longest first (ties in
    index order) and each put in the open bin it fills the most (best fit), else in a new bin. Deterministic.
    Every length must be ≤ capacity.

    Example::

        best_fit_decreasing([5, 3, 4, 2], capacity=7)    # [[0, 3], [2, 1]]
    """
    if any(n > capacity for n in lengths):
        raise ValueError(f"an item is longer than the capacity {capacity}")
    order = sorted(range(len(lengths)), key=lambda k: (-lengths[k], k))
    bins: list[list[int]] = []
    rooms: list[tuple[int, int]] = []  # (room left, bin index), sorted
    for k in order:
        at = bisect.bisect_left(rooms, (lengths[k], -1))
        if at < len(rooms):
            room, b = rooms.pop(at)
        else:
            room, b = capacity, len(bins)
            bins.append([])
        bins[b].append(k)
        bisect.insort(rooms, (room - lengths[k], b))
    return bins


def packed_collator(tokenizer=None, return_use_cache: bool = True):
    """The collator of "padding_free" rows: each row's examples (found where `position_ids` restart at 0) go
    through transformers' `DataCollatorWithFlattening` (the row concatenated, positions restarting per example,
    the first label of each example -100 so that no example learns to predict the next one's first token); the
    rows are then stacked, the shorter ones padded at the end (pad tokens as one more example of their own,
    labels -100). No attention mask is returned: transformers' mask builder (`masking_utils.
    find_packed_sequence_indices`) then reads the restarting `position_ids` and lets a token attend only to
    earlier tokens of its own example. That detection is skipped when the model holds a cache, so the batch
    carries `use_cache=False` (a teacher or a model outside Trainer keeps `config.use_cache=True`).

    Rows stay the batch dimension (rather than one [1, all tokens] row): the eager/sdpa mask then grows with
    rows × block_size², not with (rows × block_size)².

    Example::

        trainer = Trainer(model, args, train_dataset=rows["train"], data_collator=packed_collator(tokenizer))
    """
    import torch
    from transformers import DataCollatorWithFlattening

    flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100, return_tensors="np")
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0

    def collate(features):
        rows = []
        for feature in features:
            positions = list(feature["position_ids"])
            starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
            members = [
                {"input_ids": list(feature["input_ids"][a:b]), "labels": list(feature["labels"][a:b])}
                for a, b in zip(starts, starts[1:], strict=False)
            ]
            rows.append(flatten(members))
        width = max(row["input_ids"].shape[-1] for row in rows)
        batch = {key: [] for key in ("input_ids", "labels", "position_ids")}
        for row in rows:
            gap = width - row["input_ids"].shape[-1]
            batch["input_ids"].append(list(row["input_ids"][0]) + [pad_id] * gap)
            batch["labels"].append(list(row["labels"][0]) + [-100] * gap)
            batch["position_ids"].append(list(row["position_ids"][0]) + list(range(gap)))
        out = {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}
        if return_use_cache:
            out["use_cache"] = False
        return out

    return collate


def check_packed_attention(model, length: int = 6) -> None:
    """Refuse "padding_free" packing for a model whose attention does not keep packed examples apart.

    transformers builds the per-example mask from restarting `position_ids` only in the models that hand them
    to its mask builder (GPT-2, Llama, Mistral, Qwen2, GPT-NeoX, Phi, Gemma...); others (OPT, BLOOM) would let
    every example attend to the ones before it in its row, silently. Two short examples are packed into one row
    through `packed_collator` and the second one's logits compared with its logits alone: one forward pass of a
    dozen tokens, in eval mode.

    Example::

        model = AutoModelForCausalLM.from_pretrained(path)
        check_packed_attention(model)   # InputError for OPT
    """
    import torch

    vocab = model.get_input_embeddings().weight.shape[0]
    first, second = [(3 * i + 1) % vocab for i in range(length)], [(5 * i + 2) % vocab for i in range(length)]
    row = {
        "input_ids": first + second,
        "labels": first + second,
        "position_ids": list(range(length)) * 2,
    }
    packed = packed_collator()([row])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            together = (
                model(
                    input_ids=packed["input_ids"].to(device),
                    position_ids=packed["position_ids"].to(device),
                    use_cache=False,
                )
                .logits[0, length:]
                .float()
            )
            alone = model(input_ids=torch.tensor([second], device=device), use_cache=False).logits[0].float()
    finally:
        model.train(was_training)
    if not torch.allclose(together, alone, rtol=1e-3, atol=1e-4):
        raise InputError(
            f"model type '{model.config.model_type}' does not keep packed examples apart (its attention ignores "
            "restarting position ids), so --packing padding_free would let each example attend to the ones "
            "before it: use --packing none"
        )
