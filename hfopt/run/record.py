"""The record a run leaves in output_dir: config.yaml (rerun it with --config), run_info.json (versions, machine,
threads, distribution, global batch, data fingerprints, status), all_results.json, and the printed table.

config.yaml and run_info.json are written once training has trained its first step (never by a run that fails
before), and run_info.json again, with `"status": "complete"`, when the run has finished.

Example::

    plan = plan_output_dir(training_args, run_args, config, arguments, data_files, title="finetune_bert")
    trainer.add_callback(RunRecordCallback(plan))
    ...
    finish_run(trainer, results, plan=plan)
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from ..hardware import cpu_info, peak_memory_mb
from .files import folder_size, write_json_atomic, write_text_atomic
from .output_dir import CONFIG_FILE, RESULTS_FILE, RUN_INFO_FILE, RunPlan, data_file_records, list_checkpoints

logger = logging.getLogger(__name__)

__all__ = [
    "RunRecordCallback",
    "finish_run",
    "format_results_table",
    "library_versions",
    "run_info",
    "save_config",
]


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a run's numbers depend on."""
    versions = {"python": platform.python_version()}
    for name in (
        "hfopt",
        "torch",
        "transformers",
        "accelerate",
        "datasets",
        "tokenizers",
        "peft",
        "deepspeed",
        "torchao",
        "onnxruntime",
        "onnx",
        "onnxscript",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def save_config(config: dict[str, Any], output_dir: str | os.PathLike, name: str = CONFIG_FILE) -> Path:
    """Write the resolved configuration as `config.yaml` (or `name`) in output_dir, atomically; returns its path."""
    path = Path(output_dir) / name
    header = "# Resolved configuration of this run; rerun it with: --config " + str(path) + "\n"
    write_text_atomic(path, header + yaml.safe_dump(config, sort_keys=True))
    return path


def run_info(
    training_args, config: dict[str, Any], status: str, data_files: dict[str, Any] | None = None, model=None
) -> dict[str, Any]:
    """What a reader needs to reproduce a run and judge its figures: versions, machine (CPU and its int8/bf16
    instruction sets, threads), seed, distribution, the global batch, the config, the data files' fingerprints.

    global_batch_size = per_device_train_batch_size × num_processes × gradient_accumulation_steps.
    """
    import psutil
    import torch

    state = _accelerator_state(training_args)
    num_processes = training_args.world_size
    info = {
        "status": status,
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
        "cpu": cpu_info(),
        "host": platform.node(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "torch_threads": torch.get_num_threads(),
        "peak_memory_mb": peak_memory_mb(),
        "wall_time_seconds": time.time() - psutil.Process().create_time(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "config": config,
        "data_files": data_files or {},
        "training_arguments": training_args.to_dict(),
    }
    if model is not None:
        info["parameters"] = sum(p.numel() for p in model.parameters())
        info["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return info


def _accelerator_state(training_args):
    """The state the run trained under: accelerate's AcceleratorState once a Trainer has built it (it says FSDP or
    DEEPSPEED where the process-level PartialState says MULTI_GPU or MULTI_CPU)."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state.get("distributed_type") is not None:
        return AcceleratorState()
    return training_args.distributed_state


class RunRecordCallback(TrainerCallback):
    """Writes config.yaml and run_info.json once the first training step has trained, and, on a fresh start
    over an earlier run, removes that run's checkpoints and results at the same moment (not before: a run that
    fails to start leaves the folder as it was). Main process only.

    The configuration and data files' fingerprints come from the plan unless given.

    Example::

        trainer.add_callback(RunRecordCallback(plan))
    """

    def __init__(self, plan: RunPlan, config: dict[str, Any] | None = None, data_files: dict[str, str] | None = None):
        self.plan = plan
        self.config = plan.config if config is None else config
        self.data_files = plan.data_records if data_files is None else data_file_records(data_files)
        self._written = False

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self._written or not state.is_world_process_zero:
            return
        self._written = True
        for path in self.plan.stale:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        save_config(self.config, args.output_dir)
        write_json_atomic(
            Path(args.output_dir) / RUN_INFO_FILE, run_info(args, self.config, "training", self.data_files, model)
        )


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


def finish_run(
    trainer,
    results: dict[str, Any],
    title: str | None = None,
    config: dict[str, Any] | None = None,
    data_files: dict[str, str] | None = None,
    keep_checkpoints: bool = True,
    plan: RunPlan | None = None,
) -> None:
    """Write all_results.json, config.yaml and run_info.json (status complete) and the model card (README.md, see
    `hfopt.run.model_card`), print the results table, push the model with its card (`--push_to_hub`), then
    (unless `keep_checkpoints`) delete the checkpoints, and print what the run left on disk;
    from the main process only (the push takes every process: Trainer saves on all). The checkpoints go only after
    the record says complete: a rerun of the same command reports the finished run whether or not they are there.
    `title`, `config` and the data files' fingerprints come from `plan` (`plan_output_dir`) unless given."""
    from .model_card import push_run_to_hub, should_push, write_run_model_card

    title = title or (plan.title if plan else None) or "results"
    config = config if config is not None else (plan.config if plan else {})
    args = trainer.args
    if not trainer.is_world_process_zero():
        if should_push(trainer, config):
            push_run_to_hub(trainer, None)
        return
    records = data_file_records(data_files) if data_files is not None else (plan.data_records if plan else {})
    output_dir = Path(args.output_dir)
    write_json_atomic(output_dir / RESULTS_FILE, results)
    save_config(config, output_dir)
    write_json_atomic(
        output_dir / RUN_INFO_FILE,
        run_info(args, config, "complete", records, trainer.model),
    )
    card = write_run_model_card(trainer, results, title, config)
    print(format_results_table(results, title=title), flush=True)
    if should_push(trainer, config):
        push_run_to_hub(trainer, card)
    if not keep_checkpoints:
        for _, path in list_checkpoints(output_dir):
            shutil.rmtree(path, ignore_errors=True)
    usage = disk_usage(output_dir)
    print(format_disk_usage(output_dir, usage), flush=True)


def disk_usage(output_dir: str | os.PathLike) -> dict[str, int]:
    """Bytes a run's output_dir holds: `checkpoints` (all checkpoint-* folders), `model` (everything else: the
    final model, tokenizer and record), `total`, and `num_checkpoints`.

    Example::

        disk_usage("outputs/finetune_bert")["checkpoints"]
    """
    output_dir = Path(output_dir)
    checkpoints = [path for _, path in list_checkpoints(output_dir)]
    checkpoint_bytes = sum(folder_size(path) for path in checkpoints)
    total = folder_size(output_dir)
    return dict(
        total=total, model=total - checkpoint_bytes, checkpoints=checkpoint_bytes, num_checkpoints=len(checkpoints)
    )


def format_disk_usage(output_dir: str | os.PathLike, usage: dict[str, int]) -> str:
    """One line: what the run left on disk, and how to leave less."""
    line = f"On disk: {output_dir} holds {_mb(usage['total'])} (final model and record {_mb(usage['model'])}"
    if usage["num_checkpoints"]:
        return (
            f"{line}, {usage['num_checkpoints']} checkpoint(s) with optimizer state {_mb(usage['checkpoints'])}); "
            "--keep_checkpoints false deletes the checkpoints when a run finishes, --save_total_limit keeps fewer"
        )
    return f"{line}, no checkpoints)"


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"
