"""Causal language-modelling data: the text column, the block size, and token blocks (packed or one per text).

Example::

    raw, sources = load_raw_datasets(data_args, extensions=LM_EXTENSIONS)
    column = detect_text_column(raw, sources)
    raw = drop_blank_texts(raw, column, sources)
    blocks = tokenize_for_causal_lm(raw, tokenizer, column, block_size=128, sources=sources)
"""

from __future__ import annotations

from datasets import DatasetDict

from ..errors import InputError
from .files import DataSources, check_text_dtype, tokenize_splits

__all__ = ["LM_EXTENSIONS", "check_block_size", "detect_text_column", "drop_blank_texts", "tokenize_for_causal_lm"]

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
    packing: bool = True,
    num_proc: int | None = None,
) -> DatasetDict:
    """Token blocks for causal LM training, labels = input_ids (the model shifts them).

    `packing=True`: texts (each ended by eos) are concatenated and cut into full `block_size` blocks; the
    remainder shorter than a block is dropped. `packing=False`: one example per text, truncated to block_size
    and left unpadded; `DataCollatorForSeq2Seq` then pads labels with -100 so padding never counts.
    Call it inside `training_args.main_process_first()`.
    """
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def encode(batch):
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + eos for t in batch[text_column]]
        if not packing:
            ids = [x[:block_size] for x in ids]
            return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": [list(x) for x in ids]}
        flat = [token for x in ids for token in x]
        usable = len(flat) // block_size * block_size
        blocks = [flat[i : i + block_size] for i in range(0, usable, block_size)]
        return {
            "input_ids": blocks,
            "attention_mask": [[1] * block_size for _ in blocks],
            "labels": [list(b) for b in blocks],
        }

    tokenized = tokenize_splits(raw, encode, num_proc)
    for split, dataset in tokenized.items():
        if len(dataset) == 0:
            raise InputError(
                f"{sources.of(split)} holds fewer than block_size={block_size} tokens; "
                "give more text or a smaller --block_size"
            )
    return tokenized
