"""hfopt.schedules: the decays transformers lacks, by hand computation, and inside a plain Trainer."""

import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from hfopt.schedules import (
    attach_schedule,
    get_exponential_decay_schedule_with_warmup,
    get_step_decay_schedule_with_warmup,
)

LR = 0.1


def lrs(make_scheduler, steps):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = make_scheduler(optimizer)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_exponential_decay_after_warmup():
    got = lrs(lambda o: get_exponential_decay_schedule_with_warmup(o, num_warmup_steps=4, gamma=0.9), 20)
    assert got[:4] == pytest.approx([LR * t / 4 for t in range(4)])
    assert got[4:] == pytest.approx([LR * 0.9**t for t in range(16)])


def test_step_decay_drops_by_gamma_every_step_size():
    got = lrs(lambda o: get_step_decay_schedule_with_warmup(o, num_warmup_steps=2, step_size=5, gamma=0.5), 17)
    assert got[:2] == pytest.approx([0.0, LR / 2])
    assert got[2:] == pytest.approx([LR * 0.5 ** (t // 5) for t in range(15)])


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Linear(2, 1)

    def forward(self, x, labels=None):
        return {"loss": ((self.w(x).squeeze(-1) - labels) ** 2).mean()}


def test_a_named_schedule_drives_a_plain_trainer(tmp_path):
    data = Dataset.from_dict({"x": [[1.0, 2.0]] * 40, "labels": [1.0] * 40})
    args = TrainingArguments(
        str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=10,
        learning_rate=LR,
        warmup_steps=2,
        optim="sgd",
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    seen = []

    class Record(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            seen.append(optimizer.param_groups[0]["lr"])

    trainer = Trainer(model=Model(), args=args, train_dataset=data, callbacks=[Record()])
    attach_schedule(trainer, "step", step_size=3, gamma=0.1)
    trainer.train()
    assert seen == pytest.approx([0.0, LR / 2] + [LR * 0.1 ** (t // 3) for t in range(8)])
    with pytest.raises(ValueError, match="unknown schedule 'cosinus'"):
        attach_schedule(trainer, "cosinus")
