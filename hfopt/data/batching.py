"""Forming batches: collators that pad each batch to its longest row (to a multiple of 8 under fp16/bf16), and
training batches of similar-length examples under a token budget, with a batch-size ramp.

Example::

    Trainer(..., data_collator=padding_collator(tokenizer, training_args))
    use_length_batches(trainer, max_tokens=4096, warmup_steps=50)
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from torch.utils.data import Sampler

from ..errors import InputError
from ..hardware import mixed_precision
from ..trainer_internals import private_method, replace_private_method

__all__ = [
    "LengthBatchSampler",
    "evaluate_in_dataset_order",
    "padding_collator",
    "seq2seq_collator",
    "use_length_batches",
]


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


class LengthBatchSampler(Sampler[list[int]]):
    """Training batches for a `DataLoader(batch_sampler=...)`: either token-budget batches (`max_tokens`: examples
    of similar length grouped so that a batch's padded size, rows × longest row, stays within the budget, as
    fairseq's --max-tokens) or fixed-size batches (`batch_size`), random or, with `group_by_length`, of
    examples of similar length (little padding), with an optional batch-size ramp.

    The token-budget batches are made once (seeded: shuffle, then sort by length within megabatches of about
    `megabatch` batches, then fill greedily) and only their order is shuffled each epoch, so every epoch has the
    same, seeded number of batches: learning-rate schedules, resume (`set_epoch` + skipped batches) and DDP
    sharding stay exact. Length-grouped fixed-size batches are made afresh each epoch from a permutation seeded
    by (seed, epoch) the same way (megabatches of `megabatch` batches sorted by length, as transformers'
    LengthGroupedSampler), so a resumed epoch replays the same batches. The number of batches is padded to a
    multiple of `num_shards` (the data-parallel processes) by repeating the first ones, as DistributedSampler
    does. `warmup_steps` ramps the batch size: during the first warmup optimizer steps only the first
    ceil(size × (step + 1) / warmup_steps) rows of each batch are used (the rest of those batches is skipped in
    that epoch). Fixed-size batches are formed as global batches (`batch_size` × `num_shards`) and dealt out as
    one micro-batch per process, so two processes of batch 8 train on the batches one process of batch 16 does.

    Args:
        lengths: the length in tokens of every example.
        batch_size / max_tokens: one of them.
        group_by_length: fixed-size batches of similar-length examples (with `batch_size`).
        seed: the seed of the batches and of each epoch's order.
        batches_per_step: micro-batches per optimizer step over all processes (accumulation × processes), for
            the ramp.
        pad_to_multiple_of: the collator's padding multiple (8 under fp16/bf16), counted in the budget.

    Example::

        sampler = LengthBatchSampler([len(x) for x in train["input_ids"]], max_tokens=4096, seed=42)
        DataLoader(train, batch_sampler=sampler, collate_fn=collator)
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int | None = None,
        max_tokens: int | None = None,
        seed: int = 0,
        warmup_steps: int = 0,
        batches_per_step: int = 1,
        num_shards: int = 1,
        megabatch: int = 50,
        pad_to_multiple_of: int | None = None,
        group_by_length: bool = False,
    ):
        if (batch_size is None) == (max_tokens is None):
            raise ValueError("give LengthBatchSampler a batch_size or a max_tokens budget (one of them)")
        if group_by_length and batch_size is None:
            raise ValueError("group_by_length goes with a batch_size (token-budget batches are always grouped)")
        self.group_by_length = group_by_length
        self.lengths = [int(n) for n in lengths]
        if not self.lengths:
            raise ValueError("LengthBatchSampler needs at least one example")
        multiple = pad_to_multiple_of or 1
        self.padded = [-(-n // multiple) * multiple for n in self.lengths]
        if max_tokens is not None and max(self.padded) > max_tokens:
            raise InputError(
                f"max_tokens_per_batch {max_tokens} is smaller than the longest training example "
                f"({max(self.padded)} tokens): raise it or lower --max_seq_length"
            )
        self.fixed_batch_size, self.max_tokens = batch_size, max_tokens
        self.seed, self.warmup_steps, self.batches_per_step = seed, warmup_steps, max(1, batches_per_step)
        self.num_shards, self.megabatch = max(1, num_shards), megabatch
        self.epoch = 0
        self.batch_size = None  # batches vary in size (accelerate's BatchSamplerShard reads this)
        self.drop_last = False
        self.token_batches = self._token_batches() if max_tokens is not None else None

    def _token_batches(self) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        random.Random(self.seed).shuffle(order)
        typical = max(1, self.max_tokens // max(1, sorted(self.padded)[len(self.padded) // 2]))
        size = typical * self.megabatch
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start : start + size], key=lambda i: self.padded[i], reverse=True)
            batch, longest = [], 0
            for i in chunk:
                if batch and (len(batch) + 1) * max(longest, self.padded[i]) > self.max_tokens:
                    batches.append(batch)
                    batch, longest = [], 0
                batch.append(i)
                longest = max(longest, self.padded[i])
            batches.append(batch)
        return batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in order, before any ramp."""
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        if self.token_batches is not None:
            batches = list(self.token_batches)
            rng.shuffle(batches)
        else:
            order = list(range(len(self.lengths)))
            rng.shuffle(order)
            size = self.fixed_batch_size * self.num_shards  # global batches, so any process count trains alike
            if self.group_by_length:
                mega = size * self.megabatch
                for start in range(0, len(order), mega):
                    order[start : start + mega] = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            batches = [order[i : i + size] for i in range(0, len(order), size)]
            if self.group_by_length:
                rng.shuffle(batches)  # else every megabatch would start with its longest batch
            return [part for batch in batches for part in self._shard(batch)]
        missing = -len(batches) % self.num_shards
        return batches + batches[:missing]

    def _shard(self, batch: list[int]) -> list[list[int]]:
        """A global batch as one micro-batch per process, in the order accelerate deals them out (the i-th batch
        to process i % num_shards); a last batch with fewer rows than processes repeats its rows."""
        n = self.num_shards
        if n == 1:
            return [batch]
        rows = batch * -(-n // len(batch)) if len(batch) < n else batch
        cut = [round(k * len(rows) / n) for k in range(n + 1)]  # a full batch: batch_size rows each
        return [rows[cut[k] : cut[k + 1]] for k in range(n)]

    def __iter__(self):
        per_epoch = len(self)
        for i, batch in enumerate(self.batches()):
            step = (self.epoch * per_epoch + i) // self.batches_per_step
            if step < self.warmup_steps:
                batch = batch[: max(1, math.ceil(len(batch) * (step + 1) / self.warmup_steps))]
            yield batch

    def __len__(self) -> int:
        if self.token_batches is None:
            return math.ceil(len(self.lengths) / (self.fixed_batch_size * self.num_shards)) * self.num_shards
        count = len(self.token_batches)
        return count + (-count % self.num_shards)


def example_lengths(dataset) -> list[int]:
    """Tokens per example of a tokenized dataset: its input_ids, or the longer of input_ids and labels (seq2seq)."""
    inputs = [len(x) for x in dataset["input_ids"]]
    if "labels" in dataset.column_names and dataset.features["labels"].__class__.__name__ in ("List", "Sequence"):
        return [max(a, len(b)) for a, b in zip(inputs, dataset["labels"], strict=True)]
    return inputs


def use_length_batches(
    trainer, max_tokens: int | None = None, warmup_steps: int = 0, group_by_length: bool = False
) -> LengthBatchSampler:
    """Make `trainer` train on `LengthBatchSampler` batches: token-budget batches of at most `max_tokens` padded
    tokens, or batches of its per-device batch size (of similar-length rows with `group_by_length`), and a
    batch-size ramp over the first `warmup_steps` optimizer steps. Works on any Trainer (the recipes call it for
    --batching length|tokens / --batch_size_warmup_steps).

    Example::

        trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
        use_length_batches(trainer, max_tokens=4096)
        trainer.train()
    """
    from torch.utils.data import DataLoader

    args = trainer.args
    sampler = LengthBatchSampler(
        example_lengths(trainer.train_dataset),
        batch_size=None if max_tokens else args.per_device_train_batch_size,
        max_tokens=max_tokens,
        seed=args.data_seed if args.data_seed is not None else args.seed,
        warmup_steps=warmup_steps,
        batches_per_step=args.gradient_accumulation_steps * max(1, args.world_size),
        num_shards=max(1, args.world_size),
        pad_to_multiple_of=_pad_multiple(args),
        group_by_length=group_by_length and not max_tokens,
    )

    def get_train_dataloader():
        # as Trainer does for its own dataloaders
        dataset = private_method(trainer, "_remove_unused_columns")(trainer.train_dataset, description="Training")
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=trainer.data_collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
        )
        return trainer.accelerator.prepare(loader)

    trainer.get_train_dataloader = get_train_dataloader
    return sampler


def evaluate_in_dataset_order(trainer) -> None:
    """Keep evaluation and prediction in dataset order under `--train_sampling_strategy group_by_length`.

    transformers applies that training strategy to evaluation and `predict` too (its `_get_eval_sampler`), so
    `trainer.predict(test).predictions` come back in length-grouped order, not the test rows' order: a
    predictions file written from them pairs rows with other rows' predictions. This makes `trainer` evaluate
    sequentially, as with every other strategy (the recipes call it; do it for any Trainer of your own).

    Example::

        trainer = Trainer(..., args=TrainingArguments(..., train_sampling_strategy="group_by_length"))
        evaluate_in_dataset_order(trainer)
        trainer.predict(test)   # rows in order
    """
    from torch.utils.data import SequentialSampler

    def eval_sampler(eval_dataset):
        if trainer.args.train_sampling_strategy != "group_by_length":
            return original(eval_dataset)
        return SequentialSampler(eval_dataset) if trainer.args.world_size <= 1 else None  # as Trainer does otherwise

    original = replace_private_method(trainer, "_get_eval_sampler", eval_sampler)
