"""Forming batches: collators that pad each batch to its longest row (to a multiple of 8 under fp16/bf16).

Example::

    Trainer(..., data_collator=padding_collator(tokenizer, training_args))
"""

from __future__ import annotations

from ..hardware import mixed_precision

__all__ = ["padding_collator", "seq2seq_collator"]


def _pad_multiple(training_args) -> int | None:
    return 8 if mixed_precision(training_args) != "no" else None


def padding_collator(tokenizer, training_args):
    """`DataCollatorWithPadding` padding each batch to its longest row (to a multiple of 8 under fp16/bf16)."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=_pad_multiple(training_args))


def seq2seq_collator(tokenizer, training_args, model=None):
    """`DataCollatorForSeq2Seq` padding inputs with pad and labels with -100 (to a multiple of 8 under fp16/bf16);
    used for translation and for causal LMs trained one example per text."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(
        tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=_pad_multiple(training_args)
    )
