"""Hyperparameter search for any recipe: `Trainer.hyperparameter_search` with optuna over a space the YAML can
override, an objective that is any eval metric, and the best trial written as a config that reruns it.

Example::

    results = search_hyperparameters(trainer, strategy_args, config, default_objective="eval_accuracy")
    # then: accelerate launch recipes/finetune_bert.py --config OUT/best_config.yaml
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import logging
from pathlib import Path
from typing import Any

from ..errors import InputError, raised_in
from ..run import save_config, write_json_atomic

logger = logging.getLogger(__name__)

__all__ = ["search_hyperparameters"]

DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
    "warmup_steps": {"type": "float", "low": 0.0, "high": 0.2},
    "weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
    "per_device_train_batch_size": {"type": "categorical", "choices": [8, 16, 32]},
}
MINIMIZED = ("loss", "perplexity")


def check_search_space(space: dict[str, Any], training_args) -> dict[str, dict[str, Any]]:
    """Validate a search space: every name a TrainingArguments field, every range well formed."""
    if not isinstance(space, dict) or not space:
        raise InputError("hp_search_space must be a non-empty mapping of {name: {type: ..., ...}}")
    fields = {f.name for f in dataclasses.fields(training_args)}
    for name, spec in space.items():
        if name not in fields:
            raise InputError(f"hp_search_space: '{name}' is not a training argument the search can set")
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind == "categorical":
            if not spec.get("choices"):
                raise InputError(f"hp_search_space: '{name}' is categorical but has no choices")
        elif kind in ("float", "int"):
            low, high = spec.get("low"), spec.get("high")
            if low is None or high is None or not low < high:
                raise InputError(f"hp_search_space: '{name}' needs low < high, got low={low}, high={high}")
            if spec.get("log") and low <= 0:
                raise InputError(f"hp_search_space: '{name}' is searched on a log scale and needs low > 0")
        else:
            raise InputError(f"hp_search_space: '{name}' has type {kind!r}; use float, int or categorical")
    return space


def _suggest(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    values = {}
    for name, spec in space.items():
        if spec["type"] == "categorical":
            values[name] = trial.suggest_categorical(name, spec["choices"])
        elif spec["type"] == "int":
            values[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            values[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return values


def open_storage(url: str):
    """The optuna storage of `--hp_search_storage`: a journal file for a path, else a database (sqlite:///...,
    postgresql://...); one InputError when optuna or the database library refuses it."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    try:
        if "://" in url:
            return optuna.storages.RDBStorage(url)
        return JournalStorage(JournalFileBackend(str(Path(url).expanduser())))
    except Exception as err:
        if raised_in(err, "optuna", "sqlalchemy") or isinstance(err, (OSError, ImportError)):
            raise InputError(f"hp_search_storage {url} cannot be opened: {str(err).splitlines()[0]}") from None
        raise


class _StorageLock:
    """Held from the moment a worker counts the search's trials until its next trial exists in the storage: a
    lock file beside a journal or sqlite file (optuna's own journal lock, which works on network filesystems).
    A database server's storage has no file to lock: there workers may overshoot the total by up to their number
    less one."""

    def __init__(self, url: str):
        from optuna.storages.journal import JournalFileOpenLock

        path = url.split(":///", 1)[1] if url.startswith("sqlite") else None if "://" in url else url
        self._lock = JournalFileOpenLock(f"{Path(path).expanduser()}.hfopt-lock") if path else None
        self.held = False

    def acquire(self) -> None:
        if self._lock is not None:
            self._lock.acquire()
        self.held = True

    def release(self) -> None:
        if self.held and self._lock is not None:
            self._lock.release()
        self.held = False


def _shared_search(trainer, strategy_args, search: dict):
    """The search on a shared storage, one trial at a time (`Trainer.hyperparameter_search` with n_trials=1).
    Each worker takes the storage's lock, counts the trials every worker has started and, while they are fewer
    than `hp_search_trials`, starts the next one; the lock is released once that trial is in the storage (when
    the Trainer makes the trial's model), so the workers' trials add up to `hp_search_trials` exactly. The best
    trial is the search's, over every worker's finished trials."""
    import inspect

    import optuna
    from transformers.trainer_utils import BestRun

    if trainer.args.world_size > 1:
        raise InputError(
            "--hp_search_storage shares a search between single-process workers: launch each worker as one process"
        )
    url, total = strategy_args.hp_search_storage, strategy_args.hp_search_trials
    name = strategy_args.hp_search_study_name or "hfopt"
    shared = dict(storage=open_storage(url), study_name=name, load_if_exists=True)
    study = optuna.create_study(direction=search["direction"], **shared)
    lock, model_init = _StorageLock(url), trainer.model_init
    takes_trial = len(inspect.signature(model_init).parameters) == 1

    def init_after_the_trial_exists(trial=None):  # the Trainer calls it once the trial is RUNNING in the storage
        lock.release()
        return model_init(trial) if takes_trial else model_init()

    ran = 0
    trainer.model_init = init_after_the_trial_exists
    try:
        while True:
            lock.acquire()
            try:
                if len(study.get_trials(deepcopy=False)) >= total:
                    break
                trainer.hyperparameter_search(n_trials=1, **search, **shared)
            finally:
                lock.release()
            ran += 1
    finally:
        trainer.model_init = model_init
    logger.info("This worker ran %d of the %d trials of search '%s' in %s", ran, total, name, url)
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        raise InputError(f"search '{name}' in {url} has no finished trial yet: its other workers are still at work")
    best = study.best_trial
    return BestRun(str(best.number), best.value, best.params)


def search_hyperparameters(
    trainer, strategy_args, config: dict[str, Any], default_objective: str, metric_names: list[str] | None = None
) -> dict[str, Any]:
    """Run `strategy_args.hp_search_trials` optuna trials (the Trainer needs a `model_init`), each a full
    training and evaluation, and return the best objective and hyperparameters as `hp_search_*` results.

    Writes `best_trial.json` and `best_config.yaml` (the run's configuration with the best values, search off)
    into output_dir: `--config output_dir/best_config.yaml` reruns the best trial.
    """
    if importlib.util.find_spec("optuna") is None:
        raise InputError('the hyperparameter search needs optuna: pip install "hfopt[hpo]"')
    if trainer.model_init is None:
        raise ValueError("search_hyperparameters needs a Trainer built with model_init")
    objective = strategy_args.hp_search_objective or default_objective
    if not objective.startswith("eval_"):
        objective = f"eval_{objective}"
    if metric_names is not None and objective.removeprefix("eval_") not in set(metric_names) | {"loss"}:
        raise InputError(
            f"hp_search_objective '{objective}' is not a metric of this recipe; it reports "
            f"{', '.join(sorted(set(metric_names) | {'loss'}))}"
        )
    direction = strategy_args.hp_search_direction or ("minimize" if objective.endswith(MINIMIZED) else "maximize")
    space = check_search_space(strategy_args.hp_search_space or DEFAULT_SPACE, trainer.args)

    def compute_objective(metrics: dict[str, float]) -> float:
        if objective not in metrics:
            raise InputError(
                f"hp_search_objective '{objective}' is not among the evaluation's metrics: {', '.join(sorted(metrics))}"
            )
        return metrics[objective]

    search = dict(
        direction=direction,
        backend="optuna",
        hp_space=lambda trial: _suggest(trial, space),
        compute_objective=compute_objective,
    )
    if strategy_args.hp_search_storage:
        best = _shared_search(trainer, strategy_args, search)
    else:
        best = trainer.hyperparameter_search(n_trials=strategy_args.hp_search_trials, **search)
    results = {
        "hp_search_objective": objective,
        "hp_search_best_objective": best.objective,
        **{f"hp_search_best_{k}": v for k, v in best.hyperparameters.items()},
    }
    if trainer.is_world_process_zero():
        output_dir = Path(trainer.args.output_dir)
        write_json_atomic(
            output_dir / "best_trial.json",
            {
                "objective": objective,
                "direction": direction,
                "value": best.objective,
                "hyperparameters": best.hyperparameters,
                "run_id": best.run_id,
                "trials": strategy_args.hp_search_trials,
            },
        )
        best_config = copy.deepcopy(config)
        best_config.update(best.hyperparameters)
        best_config.update({k: None for k in best_config if k.startswith("hp_search_")})  # the search's keys, off
        best_config.update(hp_search_trials=0, output_dir=str(output_dir / "best"))
        save_config(best_config, output_dir, name="best_config.yaml")
        logger.info(
            "Best trial: %s = %.4f with %s; rerun it with --config %s",
            objective,
            best.objective,
            best.hyperparameters,
            output_dir / "best_config.yaml",
        )
    return results
