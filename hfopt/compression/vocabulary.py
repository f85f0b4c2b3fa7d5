"""Vocabulary pruning: keep the embedding rows of the tokens a task's texts use (TextPruner's vocabulary pruning).

A classifier fine-tuned on one domain uses a fraction of a 30k-token vocabulary, and in a small model the word
embeddings are most of the weights (MiniLM-L6: 11.7M of 22.7M parameters; 3-layer student: 11.7M of 17.4M).
The tokenizer is left as it is: ids outside the kept set embed as the unknown token.

Example::

    report = prune_vocabulary(model, tokenizer, train_texts)   # {"kept": 14187, "vocabulary": 30522, ...}
    save_compressed(model, "out/pruned", tokenizer)             # load_compressed / the recipes reload it
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from ..architectures import keep_vocabulary
from ..errors import InputError

__all__ = ["prune_vocabulary"]


def prune_vocabulary(model: nn.Module, tokenizer, texts: Iterable[str], max_length: int = 512) -> dict:
    """Keep the input-embedding rows of every token id that `tokenizer` gives `texts` (plus the special tokens),
    in place. Returns how many ids were kept of the vocabulary and the share of the embedding table that went.

    Needs a tokenizer with an unknown token (WordPiece, SentencePiece): the ids of words never seen in `texts`
    map to it. Models whose output layer is tied to the input embeddings are refused."""
    unknown = tokenizer.unk_token_id
    others = {tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id} - {None}
    if unknown is None or unknown in others:
        raise InputError(
            f"vocabulary pruning needs a tokenizer with an unknown token of its own; {type(tokenizer).__name__}'s "
            f"is {tokenizer.unk_token!r} (byte-level BPE spells every text, so it has none to map unseen tokens to)"
        )
    used: set[int] = set(tokenizer.all_special_ids)
    count = 0
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == 1024:
            used.update(i for ids in tokenizer(batch, truncation=True, max_length=max_length)["input_ids"] for i in ids)
            count += len(batch)
            batch = []
    if batch:
        used.update(i for ids in tokenizer(batch, truncation=True, max_length=max_length)["input_ids"] for i in ids)
        count += len(batch)
    if not count:
        raise InputError("vocabulary pruning needs texts: none were given")
    vocabulary = model.get_input_embeddings().num_embeddings
    pruned = keep_vocabulary(model, sorted(used), unknown)
    kept = pruned.embedding.num_embeddings
    return {"kept": kept, "vocabulary": vocabulary, "texts": count, "removed_share": 1 - kept / vocabulary}
