"""The life of a recipe run: one line and exit code 2 for a user's mistake, one line for Ctrl-C or a full disk,
logging, seed and CPU threads at the start, training that resumes, and a final model that replaces the old
one only once it is completely written.

Example::

    @recipe_main
    def main(argv=None):
        ...
        start_run(training_args)
        plan = plan_output_dir(training_args, run_args, config, arguments)
        results = train_and_save(trainer, plan)
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..errors import InputError
from ..hardware import adapt_to_launch, configure_cpu_threads, launch_changes, suggest_cpu_bf16
from .files import folder_size
from .output_dir import CHECKPOINT_COMPLETE_MARKER, MODEL_FILES, RESULTS_FILE, RunPlan, list_checkpoints

logger = logging.getLogger(__name__)

__all__ = [
    "RunStopped",
    "check_metric_for_best_model",
    "exit_code",
    "recipe_main",
    "report_complete_run",
    "start_run",
    "train_and_evaluate",
    "train_and_save",
]


class RunStopped(Exception):
    """A run that ends early for a reason the user must read (Ctrl-C, a full disk): one line, an exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def recipe_main(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a recipe's (or command's) `main`: the process is first adapted to how it was launched
    (`hfopt.hardware.adapt_to_launch`: CPU data parallelism and FSDP on machines without GPUs; logged by
    `start_run`); a user mistake (`InputError`) ends the program with `error: <one line>` and exit code 2;
    Ctrl-C and other early stops with their one line and exit code (130 for Ctrl-C); no traceback in either
    case. Only the main process prints.

    Example::

        @recipe_main
        def main(argv=None): ...
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        adapt_to_launch()  # before the arguments are parsed: TrainingArguments sets up the device when built
        try:
            return main(*args, **kwargs)
        except InputError as err:
            if _is_main_process():
                print(f"error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        except RunStopped as err:
            if _is_main_process():
                print(f"stopped: {err}", file=sys.stderr, flush=True)
            raise SystemExit(err.exit_code) from None
        except KeyboardInterrupt:
            if _is_main_process():
                print("stopped: interrupted before training started; nothing was written", file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        finally:
            _end_distributed()

    return wrapper


def exit_code(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> int:
    """Run a `recipe_main`-wrapped command and return its exit code instead of raising SystemExit (the console
    script's entry points: 0, 2 with one line for a mistake, 130 for Ctrl-C)."""
    try:
        main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _end_distributed() -> None:
    """Tear the process group down before exit (left to interpreter shutdown, gloo's threads can abort it)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def setup_logging(training_args, verbose: bool = False) -> None:
    """Log hfopt at INFO on the main process and at WARNING elsewhere, transformers and datasets at WARNING, and
    drop the known-harmless third-party lines of `hfopt.quiet` unless `verbose` (which shows them all)."""
    import datasets
    import transformers

    from ..quiet import is_verbose, quiet_third_party

    quiet_third_party(verbose=verbose or is_verbose())

    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler()]
    )
    logging.getLogger("hfopt").setLevel(level)
    transformers.utils.logging.set_verbosity(logging.WARNING)
    datasets.utils.logging.set_verbosity(logging.WARNING)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def start_run(training_args, verbose: bool = False) -> None:
    """The first steps of every recipe: logging (`verbose`: third-party warnings too, see `hfopt.quiet`), CPU
    threads for this process, the seed, a writable output_dir, Trainer's count of non-padding training tokens
    (the results report tokens/s), and pinned memory only where there is a GPU to pin it for."""
    import torch
    from transformers import set_seed

    setup_logging(training_args, verbose=verbose)
    for change in launch_changes():
        logger.info("Launch: %s", change)
    if not torch.cuda.is_available() and getattr(training_args, "dataloader_pin_memory", False):
        training_args.dataloader_pin_memory = False  # pinning without a GPU only warns, once per DataLoader
    configure_cpu_threads()
    suggest_cpu_bf16(training_args)
    if training_args.include_num_input_tokens_seen in ("no", False):  # for train_tokens_per_second
        training_args.include_num_input_tokens_seen = "non_padding"
    set_seed(training_args.seed)
    check_output_dir_writable(training_args.output_dir)


def check_output_dir_writable(output_dir: str) -> None:
    """Fail before training if output_dir cannot be created or written."""
    import tempfile

    if Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise InputError(f"output_dir {output_dir} is a file, not a folder")
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as err:
        raise InputError(f"output_dir {output_dir} is not writable: {err.strerror}") from None


def check_metric_for_best_model(training_args, produced: Iterable[str], recipe: str) -> None:
    """`metric_for_best_model` must name a metric the recipe's evaluation produces (checked before training,
    not after the first evaluation)."""
    name = training_args.metric_for_best_model
    if name is None:
        return
    produced = sorted(set(produced) | {"loss"})
    if name.removeprefix("eval_") not in produced:
        raise InputError(
            f"metric_for_best_model '{name}' is not a metric {recipe} produces; it produces: {', '.join(produced)}"
        )


def report_complete_run(training_args, title: str) -> dict[str, Any]:
    """For a rerun of a finished run: say so, print its results, return them."""
    import json

    from .record import disk_usage, format_disk_usage, format_results_table

    path = Path(training_args.output_dir) / RESULTS_FILE
    results = json.loads(path.read_text())
    if training_args.process_index == 0:
        logger.info(
            "output_dir %s already holds this finished run (%s); pass --start_fresh true to train it again.",
            training_args.output_dir,
            path,
        )
        print(f"Already complete: {path}", flush=True)
        print(format_results_table(results, title=title), flush=True)
        print(format_disk_usage(training_args.output_dir, disk_usage(training_args.output_dir)), flush=True)
    return results


def _last_complete_checkpoint(output_dir: Path) -> Path | None:
    complete = [path for _, path in list_checkpoints(output_dir) if (path / CHECKPOINT_COMPLETE_MARKER).is_file()]
    return complete[-1] if complete else None


def _remove_partial_checkpoints(output_dir: Path) -> list[Path]:
    partial = [path for _, path in list_checkpoints(output_dir) if not (path / CHECKPOINT_COMPLETE_MARKER).is_file()]
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)
    return partial


def _is_disk_full(err: BaseException, output_dir) -> bool:
    """Whether a save failed for want of space. A real full disk does not always raise OSError(ENOSPC):
    safetensors raises its own SafetensorError ("... No space left on device (os error 28)") and torch.save a
    RuntimeError ("PytorchStreamWriter failed writing file ..."), which then counts when the disk is (nearly) full."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    message = str(err)
    if "No space left on device" in message or "os error 28" in message:
        return True
    if isinstance(err, RuntimeError) and ("file write failed" in message or "unexpected pos" in message):
        try:
            return shutil.disk_usage(output_dir).free < 64 << 20
        except OSError:
            return False
    return False


def _disk_full(trainer, err: BaseException) -> RunStopped:
    output_dir = Path(trainer.args.output_dir)
    removed = _remove_partial_checkpoints(output_dir) if trainer.is_world_process_zero() else []
    reference = _last_complete_checkpoint(output_dir)
    model = trainer.model
    needed = folder_size(reference) if reference else sum(p.numel() * p.element_size() for p in model.parameters()) * 3
    free = shutil.disk_usage(output_dir).free
    what = f"the partial {removed[0].name} was removed; " if removed else ""
    return RunStopped(
        f"no space left on the device of {output_dir} while saving: {what}a checkpoint needs about "
        f"{needed / 1e6:,.0f} MB and {free / 1e6:,.0f} MB are free; free some space (or lower "
        "--save_total_limit) and run the same command again to resume",
        exit_code=1,
    )


def train_and_save(trainer, plan: RunPlan) -> dict[str, Any]:
    """Train (resuming from `plan.checkpoint`), then save the model and tokenizer and the trainer state; returns
    the training metrics.

    The final model is written to a staging folder and swapped in only once complete, so a failed save never
    damages the model already in output_dir. Ctrl-C ends with one line naming the checkpoint to resume from; a
    full disk removes the partial checkpoint and says how much space a checkpoint needs.
    """
    clock = _TokenClock()
    trainer.add_callback(clock)
    try:
        result = trainer.train(resume_from_checkpoint=plan.checkpoint)
    except KeyboardInterrupt:
        last = _last_complete_checkpoint(Path(trainer.args.output_dir))
        where = (
            f"the last complete checkpoint is {last}; run the same command again to resume from it"
            if last
            else "no checkpoint was written yet; the same command starts again from step 0"
        )
        raise RunStopped(f"interrupted: {where}", exit_code=130) from None
    except Exception as err:
        if _is_disk_full(err, trainer.args.output_dir):
            raise _disk_full(trainer, err) from None
        raise
    try:
        save_final_model(trainer)
    except Exception as err:
        if _is_disk_full(err, trainer.args.output_dir):
            raise RunStopped(
                f"no space left on the device of {trainer.args.output_dir} while saving the final "
                "model; the model already there (if any) is unchanged and the checkpoints are kept: free "
                "some space and run the same command again",
                exit_code=1,
            ) from None
        raise
    trainer.save_state()
    metrics = dict(result.metrics)
    if clock.tokens_per_second is not None:
        metrics["train_tokens_per_second"] = clock.tokens_per_second
    return metrics


class _TokenClock(TrainerCallback):
    """Non-padding training tokens per second of this session (Trainer counts the tokens when
    include_num_input_tokens_seen is "non_padding", as start_run sets it, but reports no rate at the end)."""

    def __init__(self):
        self.start_tokens, self.started, self.tokens_per_second = 0, 0.0, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_tokens, self.started = state.num_input_tokens_seen, time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        seconds = time.perf_counter() - self.started
        if state.num_input_tokens_seen > self.start_tokens and seconds > 0:
            self.tokens_per_second = (state.num_input_tokens_seen - self.start_tokens) / seconds


def train_and_evaluate(
    trainer,
    plan: RunPlan,
    eval_before: bool = False,
    postprocess: Callable[[dict, str], dict] = lambda metrics, prefix: metrics,
) -> dict[str, Any]:
    """The middle of every recipe: evaluate before training (`eval_before_*`, only when not resuming), train and
    save (see `train_and_save`), evaluate; each step as `do_eval`/`do_train` ask. `postprocess(metrics, prefix)`
    adds derived figures (perplexity from the loss, say)."""
    args = trainer.args
    results: dict[str, Any] = {}
    if args.do_eval and eval_before and plan.checkpoint is None:
        results.update(postprocess(trainer.evaluate(metric_key_prefix="eval_before"), "eval_before"))
    if args.do_train:
        results.update(train_and_save(trainer, plan))
    if args.do_eval:
        results.update(postprocess(trainer.evaluate(), "eval"))
    return results


def save_final_model(trainer) -> None:
    """`trainer.save_model()` into a staging folder inside output_dir, then the main process moves the new
    files over the old model's (each move a rename) and removes weight files the new model does not have."""
    output_dir = Path(trainer.args.output_dir)
    staging = output_dir / ".final-model.tmp"
    if trainer.is_world_process_zero() and staging.exists():
        shutil.rmtree(staging)
    trainer.accelerator.wait_for_everyone()
    try:
        trainer.save_model(str(staging), _internal_call=True)  # --push_to_hub: finish_run pushes, with the card
    except BaseException:
        if trainer.is_world_process_zero():
            shutil.rmtree(staging, ignore_errors=True)
        raise
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return
    new_files = {p.name for p in staging.iterdir()}
    for name in MODEL_FILES:
        for old in output_dir.glob(name.replace(".safetensors", "*.safetensors").replace(".bin", "*.bin")):
            if old.is_file() and old.name not in new_files:
                old.unlink()
    for path in staging.iterdir():
        target = output_dir / path.name
        if target.is_dir() and path.is_dir():
            shutil.rmtree(target)
        os.replace(path, target)
    staging.rmdir()
