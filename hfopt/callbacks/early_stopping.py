"""Early stopping: transformers' patience rule plus a minimum improvement, a target value and a time budget."""

from __future__ import annotations

import logging
import time

import numpy as np
import transformers

logger = logging.getLogger(__name__)
_now = time.monotonic  # the training clock (a module attribute, so tests can replace it)


__all__ = ["EarlyStoppingCallback"]


class EarlyStoppingCallback(transformers.EarlyStoppingCallback):
    """A drop-in superset of `transformers.EarlyStoppingCallback`. Stops training when any rule fires:

    - patience: `early_stopping_patience` evaluations in a row without an improvement of `metric_for_best_model`
      larger than `early_stopping_threshold` and `min_delta` (absolute, or × |best| with `relative=True`);
    - `target`: the metric reached a value (≥ target when greater_is_better, else ≤ target);
    - `max_train_time`: seconds of training, counted across resumes.

    The rules that look at a metric need `metric_for_best_model` and an evaluation strategy; `max_train_time`
    alone needs neither. `early_stopping_patience=None` turns the patience rule off.

    Example::

        args = TrainingArguments(..., eval_strategy="epoch", metric_for_best_model="accuracy")
        Trainer(..., args=args, callbacks=[EarlyStoppingCallback(early_stopping_patience=3, min_delta=0.001,
                                                                 target=0.95, max_train_time=3600)])
    """

    def __init__(
        self,
        early_stopping_patience: int | None = 1,
        early_stopping_threshold: float | None = 0.0,
        min_delta: float = 0.0,
        relative: bool = False,
        target: float | None = None,
        max_train_time: float | None = None,
    ):
        super().__init__(early_stopping_patience, early_stopping_threshold)
        self.min_delta = min_delta
        self.relative = relative
        self.target = target
        self.max_train_time = max_train_time
        self.elapsed_before_resume = 0.0
        self.stop_reason: str | None = None
        self._started: float | None = None

    def _uses_metric(self) -> bool:
        return self.early_stopping_patience is not None or self.target is not None

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = _now()
        if self._uses_metric():
            super().on_train_begin(args, state, control, **kwargs)

    def check_metric_value(self, args, state, control, metric_value):
        if state.best_metric is None:
            self.early_stopping_patience_counter = 0
            return
        needed = max(
            self.early_stopping_threshold or 0.0,
            self.min_delta * abs(state.best_metric) if self.relative else self.min_delta,
        )
        gain = metric_value - state.best_metric if args.greater_is_better else state.best_metric - metric_value
        self.early_stopping_patience_counter = 0 if gain > needed else self.early_stopping_patience_counter + 1

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        if not self._uses_metric():
            return
        name = args.metric_for_best_model
        value = metrics.get(name if name.startswith("eval_") else f"eval_{name}")
        if value is None:
            return super().on_evaluate(args, state, control, metrics, **kwargs)  # warns
        if self.target is not None and (np.greater_equal if args.greater_is_better else np.less_equal)(
            value, self.target
        ):
            return self._stop(control, f"{name} = {value:.6g} reached the target {self.target}")
        if self.early_stopping_patience is not None:
            self.check_metric_value(args, state, control, value)
            if self.early_stopping_patience_counter >= self.early_stopping_patience:
                self._stop(control, f"{name} did not improve for {self.early_stopping_patience} evaluations")

    def on_step_end(self, args, state, control, **kwargs):
        if self.max_train_time is not None and self.train_time() >= self.max_train_time:
            self._stop(control, f"max_train_time of {self.max_train_time:g} s reached")

    def train_time(self) -> float:
        """Seconds trained so far, this run and those before a resume."""
        return self.elapsed_before_resume + (_now() - self._started if self._started is not None else 0.0)

    def _stop(self, control, reason: str) -> None:
        if not control.should_training_stop:
            logger.info("Early stopping: %s.", reason)
        self.stop_reason = reason
        control.should_training_stop = True

    def state(self) -> dict:
        state = super().state()
        state["args"].update(
            min_delta=self.min_delta, relative=self.relative, target=self.target, max_train_time=self.max_train_time
        )
        state["attributes"]["elapsed_before_resume"] = self.train_time()
        return state
