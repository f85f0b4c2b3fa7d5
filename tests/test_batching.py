"""hfopt.data.batching: token-budget batches never exceed their budget, visit every example once per epoch, have a
fixed number per epoch, give the same batches after a resume, and drive a plain Trainer; the batch-size ramp."""

import random

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

from hfopt.data import LengthBatchSampler, evaluate_in_dataset_order, padding_collator, use_length_batches
from hfopt.errors import InputError
from tests.testing_utils import easy_rows


def lengths(n=500, seed=0):
    rng = random.Random(seed)
    return [rng.choice([3, 5, 8, 13, 21, 40, 64]) + rng.randint(0, 3) for _ in range(n)]


@pytest.mark.parametrize("multiple", [None, 8])
def test_token_batches_stay_within_budget_and_visit_every_example_once(multiple):
    sizes = lengths()
    sampler = LengthBatchSampler(sizes, max_tokens=256, seed=3, pad_to_multiple_of=multiple)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)  # the same, seeded number every epoch
        for batch in batches:
            longest = max(sizes[i] for i in batch)
            padded = -(-longest // (multiple or 1)) * (multiple or 1)
            assert len(batch) * padded <= 256
        assert sorted(i for batch in batches for i in batch) == list(range(len(sizes)))
    # grouping by length: far less padding than random batches of the same average size
    waste = sum(len(b) * max(sizes[i] for i in b) - sum(sizes[i] for i in b) for b in batches)
    assert waste < 0.2 * sum(sizes)


def test_the_same_seed_and_epoch_give_the_same_batches_and_epochs_differ():
    a, b = LengthBatchSampler(lengths(), max_tokens=256, seed=1), LengthBatchSampler(lengths(), max_tokens=256, seed=1)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)  # what a resumed run sees again
    b.set_epoch(3)
    assert list(a) != list(b)


def test_shards_get_equal_counts_and_the_ramp_starts_small():
    sampler = LengthBatchSampler(lengths(101), batch_size=10, seed=0, num_shards=2, warmup_steps=5, batches_per_step=2)
    batches = list(sampler)
    assert len(sampler) % 2 == 0 and len(batches) == len(sampler) == 12
    assert [len(b) for b in batches[:10]] == [2, 2, 4, 4, 6, 6, 8, 8, 10, 10]
    sampler.set_epoch(1)
    assert all(len(b) == 10 for b in list(sampler)[:-2])


def padding(batches, sizes) -> int:
    return sum(len(b) * max(sizes[i] for i in b) - sum(sizes[i] for i in b) for b in batches)


def test_length_grouped_batches_are_full_visit_every_example_once_and_replay_by_epoch():
    sizes = lengths(1000)
    grouped = LengthBatchSampler(sizes, batch_size=16, seed=5, group_by_length=True)
    random_ = LengthBatchSampler(sizes, batch_size=16, seed=5)
    epochs = []
    for epoch in range(2):
        grouped.set_epoch(epoch)
        random_.set_epoch(epoch)
        batches = list(grouped)
        assert len(batches) == len(grouped) == 63 and sorted(map(len, batches))[1:] == [16] * 62
        assert sorted(i for b in batches for i in b) == list(range(1000))
        assert padding(batches, sizes) < 0.1 * padding(list(random_), sizes)  # far less padding than random
        epochs.append(batches)
    assert epochs[0] != epochs[1]  # regrouped every epoch
    again = LengthBatchSampler(sizes, batch_size=16, seed=5, group_by_length=True)
    again.set_epoch(1)
    assert list(again) == epochs[1]  # what a resumed epoch replays
    # the batch order is shuffled: the longest batch does not open every megabatch
    longest = [max(sizes[i] for i in b) for b in epochs[0]]
    assert longest != sorted(longest, reverse=True)


def test_predictions_keep_the_row_order_under_group_by_length(tiny_bert):
    """transformers applies train_sampling_strategy='group_by_length' to predict() too: rows came back in
    length-grouped order, so a predictions file paired rows with other rows' predictions."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = [" ".join(["sunny"] * (1 + (i * 7) % 23)) + (" sad" if i % 3 else "") for i in range(48)]
    data = Dataset.from_dict({"text": texts}).map(lambda b: tokenizer(b["text"]), batched=True, remove_columns="text")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(1000)  # rows' logits far apart: a row paired with another's shows
    args = TrainingArguments(
        "unused", train_sampling_strategy="group_by_length", per_device_eval_batch_size=8, report_to="none"
    )
    trainer = Trainer(model=model, args=args, data_collator=padding_collator(tokenizer, args))
    shuffled = trainer.predict(data).predictions
    evaluate_in_dataset_order(trainer)
    predictions = trainer.predict(data).predictions
    with torch.no_grad():
        one_by_one = torch.cat([model(**tokenizer(t, return_tensors="pt")).logits for t in texts]).numpy()
    assert abs(predictions - one_by_one).max() < 1e-3
    assert abs(shuffled - one_by_one).max() > 3e-2  # the defect this guards against


def test_a_budget_below_the_longest_example_is_one_line():
    with pytest.raises(
        InputError,
        match=r"max_tokens_per_batch 32 is smaller than the longest training example "
        r"\(67 tokens\)",
    ):
        LengthBatchSampler(lengths(), max_tokens=32)


def test_a_plain_trainer_trains_on_token_batches_and_resumes_on_the_same_batches(tiny_bert, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    rows = easy_rows(120, seed=4)
    data = Dataset.from_dict({"text": [s for s, _ in rows], "label": [y for _, y in rows]}).map(
        lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"]
    )
    seen: dict[int, list[int]] = {}

    class Record(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            seen.setdefault(state.global_step, [])

    def train(out, resume=None):
        args = TrainingArguments(
            str(out),
            per_device_train_batch_size=8,
            num_train_epochs=4,
            learning_rate=5e-3,
            report_to="none",
            use_cpu=True,
            save_strategy="steps",
            save_steps=5,
            disable_tqdm=True,
            logging_steps=1,
            seed=0,
        )
        model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data,
            data_collator=padding_collator(tokenizer, args),
            callbacks=[Record()],
        )
        sampler = use_length_batches(trainer, max_tokens=64)
        sizes = []
        model.register_forward_pre_hook(lambda m, a, kw: sizes.append(kw["input_ids"].numel()), with_kwargs=True)
        trainer.train(resume_from_checkpoint=resume)
        return trainer, sampler, sizes

    trainer, sampler, sizes = train(tmp_path / "whole")
    assert trainer.state.max_steps == 4 * len(sampler)
    assert max(sizes) <= 64
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    _, _, resumed_sizes = train(tmp_path / "whole", resume=str(tmp_path / "whole" / "checkpoint-5"))
    assert resumed_sizes == sizes[5:]  # after a resume, the same batches as the uninterrupted run
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
    assert torch.tensor(sizes).float().mean() > 20  # batches fill most of the budget
