"""Learning-rate schedules transformers lacks (exponential and step decay after a linear warmup), and a way to
select them by name next to transformers' own `lr_scheduler_type` values.

Example::

    scheduler = get_exponential_decay_schedule_with_warmup(optimizer, num_warmup_steps=100, gamma=0.999)
    attach_schedule(trainer, "step", step_size=500, gamma=0.5)   # Trainer builds it instead of lr_scheduler_type
"""

from __future__ import annotations

from functools import partial

from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "SCHEDULES",
    "attach_schedule",
    "get_exponential_decay_schedule_with_warmup",
    "get_step_decay_schedule_with_warmup",
]


def _warmup_then(step: int, num_warmup_steps: int, decay) -> float:
    if step < num_warmup_steps:
        return step / max(1, num_warmup_steps)
    return decay(step - num_warmup_steps)


def get_exponential_decay_schedule_with_warmup(
    optimizer, num_warmup_steps: int, gamma: float, min_lr_ratio: float = 0.0, last_epoch: int = -1
) -> LambdaLR:
    """Linear warmup to the optimizer's lr, then η_t = η₀ · γ^t (t counted from the end of warmup), floored at
    min_lr_ratio · η₀."""

    def decay(t: int) -> float:
        return max(min_lr_ratio, gamma**t)

    return LambdaLR(optimizer, partial(_warmup_then, num_warmup_steps=num_warmup_steps, decay=decay), last_epoch)


def get_step_decay_schedule_with_warmup(
    optimizer, num_warmup_steps: int, step_size: int, gamma: float = 0.1, last_epoch: int = -1
) -> LambdaLR:
    """Linear warmup to the optimizer's lr, then η₀ · γ^⌊t / step_size⌋: a drop by γ every step_size steps."""

    def decay(t: int) -> float:
        return gamma ** (t // step_size)

    return LambdaLR(optimizer, partial(_warmup_then, num_warmup_steps=num_warmup_steps, decay=decay), last_epoch)


SCHEDULES = {
    "exponential": get_exponential_decay_schedule_with_warmup,
    "step": get_step_decay_schedule_with_warmup,
}


def attach_schedule(trainer, name: str, **kwargs) -> None:
    """Make `trainer` build hfopt's schedule `name` ("exponential", "step") when training starts, with the
    warmup of its TrainingArguments (`warmup_steps`), instead of `lr_scheduler_type`."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; hfopt adds {', '.join(SCHEDULES)} to transformers' own")

    def create_scheduler(num_training_steps: int, optimizer=None):
        if trainer.lr_scheduler is None:
            trainer.lr_scheduler = SCHEDULES[name](
                optimizer or trainer.optimizer, trainer.args.get_warmup_steps(num_training_steps), **kwargs
            )
        return trainer.lr_scheduler

    trainer.create_scheduler = create_scheduler
