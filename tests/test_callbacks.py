"""One test (or a few) per plug-in of hfopt.callbacks, each asserting its effect inside a plain Trainer."""

import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from hfopt.callbacks import (
    EarlyStoppingCallback,
    L1RegularizationCallback,
    LayerFreezingCallback,
    LossWatchdogCallback,
    ThroughputCallback,
    add_callback_first,
    layerwise_lr_decay_param_groups,
)
from hfopt.data import padding_collator
from tests.testing_utils import easy_rows


def tiny_args(tmp_path, **kw):
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        logging_steps=1,
    )
    return TrainingArguments(**{**defaults, **kw})


def bert_setup(model_dir, n=64, dropout=0.0):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout
    )
    rows = easy_rows(n, seed=3)
    data = Dataset.from_dict({"text": [s for s, _ in rows], "label": [y for _, y in rows]}).map(
        lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"]
    )
    return tokenizer, model, data


# --- early stopping -----------------------------------------------------------------------------------------


def scripted_metrics(values):
    calls = iter(values)
    return lambda eval_pred: {"score": next(calls)}


def run_with_early_stopping(tmp_path, tiny_bert, values, callback, greater_is_better=True):
    tokenizer, model, data = bert_setup(tiny_bert, n=16)
    args = tiny_args(
        tmp_path,
        max_steps=len(values) + 5,
        eval_strategy="steps",
        eval_steps=1,
        metric_for_best_model="score",
        greater_is_better=greater_is_better,
        per_device_eval_batch_size=16,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        data_collator=padding_collator(tokenizer, args),
        compute_metrics=scripted_metrics(values),
        callbacks=[callback],
    )
    trainer.train()
    return trainer.state.global_step


@pytest.mark.parametrize(
    "values, kwargs, stop_step",
    [
        ([0.5, 0.6, 0.6, 0.59, 0.7, 0.8], {"early_stopping_patience": 2}, 4),  # transformers' rule
        ([0.5, 0.505, 0.509, 0.6, 0.7], {"early_stopping_patience": 2, "min_delta": 0.01}, 3),  # absolute delta
        ([0.5, 0.54, 0.57, 0.7, 0.8], {"early_stopping_patience": 1, "min_delta": 0.1, "relative": True}, 2),
        ([0.5, 0.7, 0.96, 0.97, 0.98], {"early_stopping_patience": None, "target": 0.95}, 3),
    ],
)
def test_early_stopping_rules_stop_at_the_right_step(tmp_path, tiny_bert, values, kwargs, stop_step):
    callback = EarlyStoppingCallback(**kwargs)
    assert run_with_early_stopping(tmp_path, tiny_bert, values, callback) == stop_step
    assert callback.stop_reason


def test_early_stopping_target_for_a_loss_and_time_budget(tmp_path, tiny_bert, monkeypatch):
    assert (
        run_with_early_stopping(
            tmp_path, tiny_bert, [0.9, 0.5, 0.2, 0.1], EarlyStoppingCallback(None, target=0.3), greater_is_better=False
        )
        == 3
    )
    clock = iter(range(1000))  # each reading of the clock is one second later: step k ends at k seconds
    monkeypatch.setattr("hfopt.callbacks.early_stopping._now", lambda: float(next(clock)))
    callback = EarlyStoppingCallback(early_stopping_patience=None, max_train_time=4.5)
    callback.elapsed_before_resume = 2.0  # two seconds trained before a resume count too
    assert run_with_early_stopping(tmp_path, tiny_bert, [0.5] * 10, callback) == 3  # 2 + 3 s ≥ 4.5 s
    restored = EarlyStoppingCallback.from_state(callback.state())
    assert restored.max_train_time == 4.5 and restored.elapsed_before_resume >= 4.5


# --- freezing -------------------------------------------------------------------------------------------------


class Snapshots(TrainerCallback):
    def __init__(self):
        self.by_step = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.by_step[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(before, after, prefix):
    return any(not torch.equal(before[n], after[n]) for n in before if n.startswith(prefix))


def test_frozen_layers_stay_and_unfreeze_top_down(tmp_path, tiny_bert):
    tokenizer, model, data = bert_setup(tiny_bert)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    snapshots = Snapshots()
    freezing = LayerFreezingCallback(freeze_embeddings=True, num_frozen_layers=2, unfreeze_every_n_steps=2)
    args = tiny_args(tmp_path, max_steps=8, lr_scheduler_type="constant", optim="sgd")
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=padding_collator(tokenizer, args),
        callbacks=[freezing, snapshots],
    )
    trainer.train()
    s = {0: initial, **snapshots.by_step}
    emb, low, top = "bert.embeddings.", "bert.encoder.layer.0.", "bert.encoder.layer.1."
    # steps 1-2: only the head trains
    assert changed(s[0], s[2], "classifier.") and not any(changed(s[0], s[2], p) for p in (emb, low, top))
    # steps 3-4: the top block joins
    assert changed(s[2], s[4], top) and not changed(s[2], s[4], low) and not changed(s[2], s[4], emb)
    # steps 5-6: the next block down; steps 7-8: the embeddings, last
    assert changed(s[4], s[6], low) and not changed(s[4], s[6], emb)
    assert changed(s[6], s[8], emb)
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in in_optimizer for p in model.parameters())


def test_layerwise_lr_decay_groups(tiny_bert):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    groups = layerwise_lr_decay_param_groups(model, learning_rate=1.0, decay=0.5, weight_decay=0.01)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert lr_of[id(params["classifier.weight"])] == 1.0
    assert lr_of[id(params["bert.encoder.layer.1.output.dense.weight"])] == 1.0
    assert lr_of[id(params["bert.encoder.layer.0.output.dense.weight"])] == 0.5
    assert lr_of[id(params["bert.embeddings.word_embeddings.weight"])] == 0.25
    assert wd_of[id(params["bert.encoder.layer.0.output.dense.bias"])] == 0.0
    assert wd_of[id(params["bert.encoder.layer.0.output.dense.weight"])] == 0.01
    assert sum(len(g["params"]) for g in groups) == len(params)


# --- L1 ----------------------------------------------------------------------------------------------------


def test_l1_gradient_equals_hand_computation(tmp_path, tiny_bert):
    """One SGD step with L1 minus one without equals -lr·λ·sign(w) on weight matrices, 0 on biases and norms."""
    lam, lr = 1e-3, 0.1
    results = {}
    for name, callbacks in (("plain", []), ("l1", [L1RegularizationCallback(lam)])):
        tokenizer, model, data = bert_setup(tiny_bert, n=8)
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        args = tiny_args(
            tmp_path, max_steps=1, optim="sgd", learning_rate=lr, lr_scheduler_type="constant", max_grad_norm=0.0
        )
        Trainer(
            model=model,
            args=args,
            train_dataset=data,
            data_collator=padding_collator(tokenizer, args),
            callbacks=callbacks,
        ).train()
        results[name] = {n: p.detach().clone() for n, p in model.named_parameters()}
    for n, w0 in start.items():
        expected = -lr * lam * torch.sign(w0) if w0.ndim >= 2 else torch.zeros_like(w0)
        assert torch.allclose(results["l1"][n] - results["plain"][n], expected, atol=1e-7), n


# --- watchdog ----------------------------------------------------------------------------------------------


class Regressor(nn.Module):
    """y = w·x; the loss is poisoned (NaN or ×100) at the given forward calls."""

    def __init__(self, poison=None, at=()):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.poison, self.at, self.calls = poison, set(at), 0

    def forward(self, x, labels=None):
        self.calls += 1
        loss = nn.functional.mse_loss(self.linear(x).squeeze(-1), labels)
        if self.calls in self.at:
            loss = loss * float("nan") if self.poison == "nan" else loss * 100
        return {"loss": loss}


def regression_data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return Dataset.from_dict({"x": x.tolist(), "labels": (x @ torch.tensor([1.0, -2.0, 0.5, 3.0])).tolist()})


def train_regressor(tmp_path, model, callback, **kw):
    args = tiny_args(tmp_path, max_steps=12, learning_rate=0.05, lr_scheduler_type="constant", **kw)
    trainer = Trainer(model=model, args=args, train_dataset=regression_data(), callbacks=[callback])
    weights = {}

    class Keep(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **k):
            weights[state.global_step] = model.linear.weight.detach().clone()

    trainer.add_callback(Keep())
    trainer.train()
    return trainer, weights


def test_watchdog_skips_a_nan_update_and_goes_on(tmp_path):
    model = Regressor("nan", at={5})
    watchdog = LossWatchdogCallback(action="skip")
    trainer, weights = train_regressor(tmp_path, model, watchdog)
    assert watchdog.events == [(5, "loss is nan")]
    assert torch.equal(weights[4], weights[5])  # the poisoned update was dropped
    assert trainer.state.global_step == 12 and torch.isfinite(model.linear.weight).all()


def test_watchdog_stops_on_nan_and_leaves_a_loadable_checkpoint(tmp_path):
    from safetensors.torch import load_file

    model = Regressor("nan", at={7})
    trainer, weights = train_regressor(
        tmp_path, model, LossWatchdogCallback(action="stop"), save_strategy="steps", save_steps=2
    )
    assert trainer.state.global_step == 7 and torch.equal(weights[6], weights[7])
    last = load_file(tmp_path / "out" / "checkpoint-6" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in last.values())


def test_watchdog_skips_a_loss_spike(tmp_path):
    watchdog = LossWatchdogCallback(action="skip", spike_factor=5.0, min_history=3)
    _, weights = train_regressor(tmp_path, Regressor("spike", at={9}), watchdog)
    assert [step for step, _ in watchdog.events] == [9] and "running median" in watchdog.events[0][1]
    assert torch.equal(weights[8], weights[9])


# --- throughput ----------------------------------------------------------------------------------------------


class Recorder(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def test_throughput_figures_reach_the_logs_and_earlier_callbacks(tmp_path, tiny_bert):
    tokenizer, model, _ = bert_setup(tiny_bert)
    data = Dataset.from_dict({"input_ids": [[2, 10, 11, 12, 3]] * 32, "labels": [0, 1] * 16})  # 5 real tokens each
    args = tiny_args(tmp_path, max_steps=4, logging_steps=2)
    recorder = Recorder()  # registered before, like TensorBoard/W&B
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=padding_collator(tokenizer, args),
        callbacks=[recorder],
    )
    add_callback_first(trainer, ThroughputCallback(peak_flops=1e12))
    trainer.train()
    logged = [row for row in recorder.logs if "loss" in row]
    assert len(logged) == 2
    for row in logged:
        assert row["throughput_tokens_per_second"] == pytest.approx(5 * row["throughput_samples_per_second"])
        assert row["throughput_samples_per_second"] > 0 and row["peak_memory_mb"] > 10 and 0 < row["mfu"] < 1
    assert "throughput_samples_per_second" in trainer.state.log_history[0]
