"""Text augmentation for training data only: random token deletion, swap and masking, applied on the fly.

Works on token ids after tokenization, never touches special tokens ([CLS], [SEP], padding), needs no
download, and is deterministic under a seed. Attach it to the training split only::

    augment_train_dataset(tokenized["train"], tokenizer, deletion_prob=0.1, swap_prob=0.1, mask_prob=0.1, seed=0)
"""

from __future__ import annotations

import random

__all__ = ["TokenAugmenter", "augment_train_dataset"]


class TokenAugmenter:
    """Randomly delete (p=deletion_prob), swap with a neighbour (p=swap_prob) and replace by the mask token
    (p=mask_prob) the non-special tokens of each example. Labels are untouched.

    Example::

        augmenter = TokenAugmenter(tokenizer, deletion_prob=0.1, seed=0)
        augmenter(tokenizer("a short example")["input_ids"])
    """

    def __init__(
        self, tokenizer, deletion_prob: float = 0.0, swap_prob: float = 0.0, mask_prob: float = 0.0, seed: int = 0
    ):
        for name, p in (("deletion_prob", deletion_prob), ("swap_prob", swap_prob), ("mask_prob", mask_prob)):
            if not 0 <= p < 1:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        if mask_prob and tokenizer.mask_token_id is None:
            raise ValueError("mask_prob needs a tokenizer with a mask token")
        self.special = set(tokenizer.all_special_ids)
        self.mask_id = tokenizer.mask_token_id
        self.deletion_prob, self.swap_prob, self.mask_prob = deletion_prob, swap_prob, mask_prob
        self.rng = random.Random(seed)

    def __call__(self, ids: list[int]) -> list[int]:
        rng = self.rng
        positions = [i for i, t in enumerate(ids) if t not in self.special]
        ids = list(ids)
        for i in positions:
            if rng.random() < self.mask_prob:
                ids[i] = self.mask_id
        for a, b in zip(positions, positions[1:], strict=False):
            if b == a + 1 and rng.random() < self.swap_prob:  # neighbours within one segment
                ids[a], ids[b] = ids[b], ids[a]
        deleted = {i for i in positions if rng.random() < self.deletion_prob}
        if len(deleted) == len(positions):  # keep at least one real token
            deleted.discard(positions[0])
        return [t for i, t in enumerate(ids) if i not in deleted]


def augment_train_dataset(
    dataset, tokenizer, deletion_prob: float = 0.0, swap_prob: float = 0.0, mask_prob: float = 0.0, seed: int = 0
):
    """Augment a tokenized training `datasets.Dataset` on the fly (`set_transform`): each time a row is read,
    a new random variant of its `input_ids` is made (attention_mask and token_type_ids follow). Returns it."""
    augmenter = TokenAugmenter(tokenizer, deletion_prob, swap_prob, mask_prob, seed)

    def transform(batch):
        out = {k: list(v) for k, v in batch.items()}
        out["input_ids"] = [augmenter(ids) for ids in batch["input_ids"]]
        lengths = [len(ids) for ids in out["input_ids"]]
        if "attention_mask" in out:
            out["attention_mask"] = [[1] * n for n in lengths]
        if "token_type_ids" in out:
            # swaps stay within a segment and [SEP] is never deleted: segment 1 starts after the first [SEP]
            out["token_type_ids"] = [_segments(ids, tokenizer.sep_token_id) for ids in out["input_ids"]]
        return out

    dataset.set_transform(transform)
    return dataset


def _segments(ids: list[int], sep_id: int | None) -> list[int]:
    segment, out = 0, []
    for t in ids:
        out.append(segment)
        if t == sep_id:
            segment = 1
    return out
