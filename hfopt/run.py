"""The life of a run on disk: logging, resume from the last complete checkpoint, atomic writes, run_info.json,
all_results.json and the results table printed at the end."""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from .errors import InputError

logger = logging.getLogger("hfopt")

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# Trainer writes trainer_state.json last when it saves a checkpoint: its presence marks a complete one.
CHECKPOINT_COMPLETE_MARKER = "trainer_state.json"


def exit_on_input_error(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a recipe's `main` so a user mistake ends the program with one line and exit code 2.

    Example::

        @exit_on_input_error
        def main(argv=None): ...
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


def setup_logging(training_args) -> None:
    """Log hfopt and transformers at INFO on the main process and at WARNING elsewhere."""
    import datasets
    import transformers

    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler()]
    )
    logger.setLevel(level)
    transformers.utils.logging.set_verbosity(level if level == logging.WARNING else logging.WARNING)
    datasets.utils.logging.set_verbosity(logging.WARNING)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def start_run(training_args) -> None:
    """The first steps of every recipe: logging, the seed, and a writable output_dir."""
    from transformers import set_seed

    setup_logging(training_args)
    set_seed(training_args.seed)
    check_output_dir_writable(training_args.output_dir)


def train_and_save(trainer, checkpoint: str | None) -> dict[str, Any]:
    """Train (resuming from checkpoint), then save the model and tokenizer and the trainer state from the main
    process; returns the training metrics."""
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    trainer.save_state()
    return result.metrics


def checkpoint_to_resume(training_args, start_fresh: bool = False) -> str | None:
    """The last complete `checkpoint-N` in output_dir to resume from, or None to train from step 0.

    A checkpoint without `trainer_state.json` was cut off while saving: it is skipped (with a warning) in favour
    of the previous complete one. With `start_fresh`, old checkpoints are deleted by the main process first.

    Example::

        trainer.train(resume_from_checkpoint=checkpoint_to_resume(training_args))
    """
    output_dir = Path(training_args.output_dir)
    checkpoints = sorted(
        (int(m.group(1)), p) for p in output_dir.glob("checkpoint-*") if (m := CHECKPOINT_PATTERN.match(p.name))
    ) if output_dir.is_dir() else []
    if not checkpoints:
        return None
    if start_fresh:
        if training_args.process_index == 0:
            for _, path in checkpoints:
                shutil.rmtree(path)
            logger.info("start_fresh: removed %d old checkpoint(s) from %s", len(checkpoints), output_dir)
        return None
    for step, path in reversed(checkpoints):
        if (path / CHECKPOINT_COMPLETE_MARKER).is_file():
            logger.info("Resuming from %s (step %d); pass --start_fresh to train from step 0 instead.", path, step)
            return str(path)
        logger.warning("Skipping incomplete checkpoint %s (no %s).", path, CHECKPOINT_COMPLETE_MARKER)
    return None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text to path through a temporary file in the same folder and a rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """`write_text_atomic` for JSON (indented, keys sorted)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a run's numbers depend on."""
    versions = {"python": platform.python_version()}
    for name in ("hfopt", "torch", "transformers", "accelerate", "datasets", "tokenizers", "peft", "deepspeed"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def run_info(training_args, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a reader needs to reproduce a run: versions, seed, distribution, the global batch, the config.

    global_batch_size = per_device_train_batch_size × num_processes × gradient_accumulation_steps.
    """
    import torch

    state = training_args.distributed_state
    num_processes = training_args.world_size
    return {
        "versions": library_versions(),
        "seed": training_args.seed,
        "distributed_type": str(getattr(state, "distributed_type", "NO")).split(".")[-1],
        "num_processes": num_processes,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "global_batch_size": training_args.per_device_train_batch_size
        * num_processes
        * training_args.gradient_accumulation_steps,
        "mixed_precision": training_args.mixed_precision,
        "device": str(training_args.device),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "config": config if config is not None else getattr(training_args, "hfopt_config", {}),
        "training_arguments": training_args.to_dict(),
    }


def format_results_table(results: dict[str, Any], title: str = "results") -> str:
    """A two-column text table of results, numbers rounded for reading.

    Example::

        print(format_results_table({"eval_accuracy": 0.91, "train_runtime": 42.0}))
    """
    rows = [(k, _fmt(v)) for k, v in sorted(results.items())]
    width = max([len(k) for k, _ in rows] + [len(title)])
    value_width = max([len(v) for _, v in rows] + [5])
    line = "+" + "-" * (width + 2) + "+" + "-" * (value_width + 2) + "+"
    out = [line, f"| {title:<{width}} | {'':>{value_width}} |", line]
    out += [f"| {k:<{width}} | {v:>{value_width}} |" for k, v in rows]
    out.append(line)
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def finish_run(trainer, results: dict[str, Any], title: str) -> None:
    """Write all_results.json and run_info.json and print the results table, from the main process only."""
    args = trainer.args
    if not trainer.is_world_process_zero():
        return
    write_json_atomic(Path(args.output_dir) / "all_results.json", results)
    write_json_atomic(Path(args.output_dir) / "run_info.json", run_info(args))
    print(format_results_table(results, title=title), flush=True)


def check_output_dir_writable(output_dir: str) -> None:
    """Fail before training if output_dir cannot be created or written."""
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as err:
        raise InputError(f"output_dir {output_dir} is not writable: {err.strerror}") from None
