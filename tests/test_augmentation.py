from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from hfopt.augmentation import TokenAugmenter, augment_train_dataset
from hfopt.data import padding_collator
from tests.testing_utils import easy_rows


def tokenized(tokenizer, n=50, seed=4):
    rows = easy_rows(n, seed=seed)
    return Dataset.from_dict({"text": [s for s, _ in rows], "label": [y for _, y in rows]}).map(
        lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"]
    )


def test_augmentation_changes_training_inputs_only_and_keeps_labels(tiny_bert, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    train, evaluation = tokenized(tokenizer), tokenized(tokenizer)
    original = [list(r["input_ids"]) for r in train]
    augment_train_dataset(train, tokenizer, deletion_prob=0.2, swap_prob=0.2, mask_prob=0.2, seed=1)

    args = TrainingArguments(
        str(tmp_path),
        per_device_train_batch_size=50,
        per_device_eval_batch_size=50,
        report_to="none",
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(
        model=AutoModelForSequenceClassification.from_pretrained(tiny_bert),
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=padding_collator(tokenizer, args),
    )
    train_batch = next(iter(trainer.get_train_dataloader()))
    eval_batch = next(iter(trainer.get_eval_dataloader()))

    seen = [[t for t in row.tolist() if t != tokenizer.pad_token_id] for row in train_batch["input_ids"]]
    assert sum(row not in original for row in seen) > 25  # most training rows changed
    assert sorted(train_batch["labels"].tolist()) == sorted(r["label"] for r in evaluation)  # labels kept
    for row in seen:  # [CLS] first, [SEP] last, mask tokens appear
        assert row[0] == tokenizer.cls_token_id and row[-1] == tokenizer.sep_token_id
    assert any(tokenizer.mask_token_id in row for row in seen)
    evaluated = [[t for t in row.tolist() if t != tokenizer.pad_token_id] for row in eval_batch["input_ids"]]
    assert evaluated == [list(r["input_ids"]) for r in evaluation]  # evaluation untouched


def test_augmentation_is_deterministic_under_a_seed(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    ids = tokenizer("the day was sunny and warm outside today")["input_ids"]
    a = TokenAugmenter(tokenizer, 0.3, 0.3, 0.3, seed=7)
    b = TokenAugmenter(tokenizer, 0.3, 0.3, 0.3, seed=7)
    assert [a(ids) for _ in range(5)] == [b(ids) for _ in range(5)]
    assert TokenAugmenter(tokenizer, 0.0, 0.0, 0.0)(ids) == ids


def test_pair_segments_survive_augmentation(tiny_bert):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    data = Dataset.from_dict(dict(tokenizer(["the sunny day"] * 4, ["a cold road home"] * 4)))
    augment_train_dataset(data, tokenizer, deletion_prob=0.3, swap_prob=0.5, seed=0)
    for row in data:
        first_sep = row["input_ids"].index(tokenizer.sep_token_id)
        assert row["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(row["input_ids"]) - first_sep - 1)
        assert len(row["attention_mask"]) == len(row["input_ids"])
