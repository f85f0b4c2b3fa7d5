"""A user's own pipeline: plain transformers objects, no recipe code, every hfopt plug-in at once."""

import torch
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from hfopt.augmentation import augment_train_dataset
from hfopt.callbacks import (
    EarlyStoppingCallback,
    L1RegularizationCallback,
    LayerFreezingCallback,
    LossWatchdogCallback,
    ThroughputCallback,
    add_callback_first,
)
from hfopt.metrics import classification_metrics
from hfopt.models import apply_lora, use_batch_mean_loss
from hfopt.schedules import attach_schedule
from tests.testing_utils import easy_rows


def dataset(tokenizer, n, seed):
    rows = easy_rows(n, seed)
    return Dataset.from_dict({"text": [s for s, _ in rows], "label": [y for _, y in rows]}).map(
        lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"]
    )


def test_all_plugins_together_in_a_plain_trainer(tiny_bert, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    use_batch_mean_loss(model)
    train, dev = dataset(tokenizer, 400, 1), dataset(tokenizer, 100, 2)
    augment_train_dataset(train, tokenizer, swap_prob=0.1, seed=0)
    args = TrainingArguments(
        str(tmp_path),
        per_device_train_batch_size=16,
        num_train_epochs=6,
        learning_rate=2e-3,
        eval_strategy="epoch",
        save_strategy="epoch",
        metric_for_best_model="accuracy",
        load_best_model_at_end=True,
        logging_steps=5,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        restore_callback_states_from_checkpoint=True,
    )
    early = EarlyStoppingCallback(early_stopping_patience=2, target=0.99, max_train_time=600)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=dev,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=classification_metrics,
        callbacks=[
            early,
            LayerFreezingCallback(freeze_embeddings=True, unfreeze_every_n_steps=20),
            L1RegularizationCallback(1e-6),
            LossWatchdogCallback(action="skip", spike_factor=10),
        ],
    )
    add_callback_first(trainer, ThroughputCallback())
    attach_schedule(trainer, "exponential", gamma=0.99)
    trainer.train()
    history = trainer.state.log_history
    losses = [row["loss"] for row in history if "loss" in row]
    assert losses[-1] < 0.5 * losses[0]
    assert trainer.evaluate()["eval_accuracy"] >= 0.9
    assert any("throughput_tokens_per_second" in row for row in history)
    assert early.stop_reason is None or "target" in early.stop_reason


def test_peft_trains_the_adapters_only(tiny_bert, tmp_path):
    from types import SimpleNamespace

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    peft_args = SimpleNamespace(
        use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules=["query", "value"]
    )
    model = apply_lora(base, peft_args, task_type="SEQ_CLS")
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    args = TrainingArguments(
        str(tmp_path),
        per_device_train_batch_size=16,
        max_steps=10,
        learning_rate=1e-2,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    Trainer(
        model=model,
        args=args,
        train_dataset=dataset(tokenizer, 160, 3),
        data_collator=DataCollatorWithPadding(tokenizer),
    ).train()
    after = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in model.named_parameters()}
    assert any(not torch.equal(lora_before[n], p) for n, p in model.named_parameters() if n in lora_before)
    for name, weight in before.items():
        if "classifier" not in name:  # the task head trains with the adapters (peft's modules_to_save)
            assert torch.equal(after[name].detach(), weight), name
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
