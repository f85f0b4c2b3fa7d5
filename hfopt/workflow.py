"""The steps every recipe shares between its task-specific ones: the run begun (logging, seed, output folder), the
model made ready to train, the Trainer built with the strategies and training-time compression wired in, and
then either the hyperparameter search or the training.

Example (a recipe's middle, see recipes/finetune_bert.py)::

    plan = begin_run(training_args, run_args, data_args, config, arguments, title="my_recipe")
    if plan.complete:
        return report_complete_run(training_args, "my_recipe")
    ...  # data, tokenizer, model config: the task's own steps

    def model_init(trial=None):
        model = load_model(AutoModelForSequenceClassification, model_args, model_config, tokenizer)
        return prepare_model(model, compression_args, peft_args, task_type="SEQ_CLS")

    trainer = build_trainer(Trainer, model_init, strategy_args, compression_args, args=training_args, ...)
    if strategy_args.hp_search_trials:
        return search(trainer, plan, strategy_args, "eval_accuracy", metric_names)
    results = train(trainer, plan, run_args, peft_args)
    finish_run(trainer, results, plan=plan, keep_checkpoints=run_args.keep_checkpoints)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .callbacks import apply_strategies
from .compression import apply_model_compression, apply_training_compression
from .data import local_data_files
from .models import apply_lora, save_merged, use_batch_mean_loss
from .run import (
    RunPlan,
    RunRecordCallback,
    finish_run,
    model_folders,
    plan_output_dir,
    start_run,
    train_and_evaluate,
)
from .study import search_hyperparameters

__all__ = ["begin_run", "build_trainer", "prepare_model", "search", "train"]

logger = logging.getLogger(__name__)


def begin_run(training_args, run_args, data_args, config: dict[str, Any], arguments, title: str) -> RunPlan:
    """Logging, threads and seed for this process (`start_run`), then what to do with output_dir: the plan of
    `plan_output_dir`, which hashes the local data files and model folders once (`plan.complete`: nothing to
    do; `plan.checkpoint`: where training resumes)."""
    start_run(training_args, verbose=run_args.verbose)
    data_files = local_data_files(data_args) | model_folders(config)
    return plan_output_dir(training_args, run_args, config, arguments, data_files, title=title)


def prepare_model(model, compression_args, peft_args=None, task_type: str | None = None):
    """A loaded model made ready to train: the loss of its batch as a mean over its tokens (as gradient
    accumulation expects, `use_batch_mean_loss`), then the compression set up before training (QAT, layer
    sharing), then LoRA adapters when `peft_args.use_peft` (`task_type`: peft's, e.g. "SEQ_CLS"). Call it in
    `model_init`, so that every search trial's model gets the same."""
    use_batch_mean_loss(model)
    model = apply_model_compression(model, compression_args)
    return apply_lora(model, peft_args, task_type=task_type) if peft_args is not None else model


def build_trainer(trainer_class, model_init: Callable, strategy_args, compression_args, **trainer_kwargs):
    """`trainer_class(**trainer_kwargs)` with its model (or, for a hyperparameter search, its `model_init`: each
    trial makes a fresh model), the training strategies (`apply_strategies`) and the training-time compression
    (`apply_training_compression`) wired in."""
    searching = strategy_args.hp_search_trials > 0
    trainer = trainer_class(
        model=None if searching else model_init(), model_init=model_init if searching else None, **trainer_kwargs
    )
    apply_strategies(trainer, strategy_args, trainer_kwargs.get("processing_class"))
    apply_training_compression(trainer, compression_args)
    return trainer


def search(trainer, plan: RunPlan, strategy_args, objective: str, metric_names: list[str] | None) -> dict[str, Any]:
    """The hyperparameter search (`search_hyperparameters`, `objective`: the metric it optimizes unless
    `--hp_search_objective` names another), its results recorded as the run's."""
    results = search_hyperparameters(trainer, strategy_args, plan.config, objective, metric_names)
    finish_run(trainer, results, plan=plan)
    return results


def train(trainer, plan: RunPlan, run_args, peft_args=None, postprocess: Callable | None = None) -> dict[str, Any]:
    """Evaluate before (with `--eval_before_training`), train (resuming from `plan.checkpoint`, the run's record
    written once training has begun: `RunRecordCallback`), save, evaluate (`train_and_evaluate`,
    `postprocess(metrics, prefix)` adding derived figures), then, for LoRA training with `--merge_adapters`, the
    merged model in output_dir/merged."""
    trainer.add_callback(RunRecordCallback(plan))
    extra = {"postprocess": postprocess} if postprocess else {}
    results = train_and_evaluate(trainer, plan, eval_before=run_args.eval_before_training, **extra)
    args = trainer.args
    merge = peft_args is not None and peft_args.use_peft and peft_args.merge_adapters
    if args.do_train and merge and trainer.is_world_process_zero():
        logger.info("Merged model saved to %s", save_merged(trainer.model, trainer.processing_class, args.output_dir))
    return results
