"""What a run may do with its output_dir: one run at a time (a lock), resume only into the same configuration,
only from a checkpoint that loads, and never overwrite a model some other run left there.

Example::

    plan = plan_output_dir(training_args, run_args, config, arguments)
    if plan.complete:
        ...  # the same run already finished here
    trainer.train(resume_from_checkpoint=plan.checkpoint)
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import logging
import os
import re
import socket
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..args import argument_objects
from ..errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "model_folders",
    "path_fingerprint",
    "CONFIG_FILE",
    "RUN_INFO_FILE",
    "RunLock",
    "RunPlan",
    "check_apart",
    "checkpoint_problem",
    "config_differences",
    "file_fingerprint",
    "list_checkpoints",
    "plan_output_dir",
]

CONFIG_FILE = "config.yaml"
RUN_INFO_FILE = "run_info.json"
RESULTS_FILE = "all_results.json"
LOCK_FILE = ".hfopt.lock"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# Trainer writes trainer_state.json last when it saves a checkpoint: its presence marks a complete one.
CHECKPOINT_COMPLETE_MARKER = "trainer_state.json"
MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.safetensors")
# Keys that change how a run is logged, evaluated or stored, never what it trains: they may differ on resume.
SAFE_ON_RESUME = frozenset(
    {
        "cache_dir",
        "dataloader_num_workers",
        "dataloader_persistent_workers",
        "dataloader_pin_memory",
        "dataloader_prefetch_factor",
        "disable_tqdm",
        "eval_accumulation_steps",
        "hub_model_id",
        "hub_private_repo",
        "hub_strategy",
        "hub_token",
        "include_num_input_tokens_seen",
        "keep_checkpoints",
        "log_level",
        "log_level_replica",
        "log_on_each_node",
        "log_throughput",
        "logging_dir",
        "logging_first_step",
        "logging_nan_inf_filter",
        "logging_steps",
        "logging_strategy",
        "output_dir",
        "peak_flops",
        "per_device_eval_batch_size",
        "preprocessing_num_workers",
        "project",
        "push_to_hub",
        "report_to",
        "run_name",
        "save_on_each_node",
        "save_only_model",
        "save_steps",
        "save_strategy",
        "save_total_limit",
        "skip_memory_metrics",
        "start_fresh",
        "token",
        "torch_empty_cache_steps",
        "verbose",
    }
)


class RunLock:
    """An exclusive lock on output_dir for the life of this process (fcntl.flock on `.hfopt.lock`): a second
    run on the same folder stops with one line; the operating system drops the lock when a run dies, so a
    killed run never leaves it stale. A process that already holds the lock (a second run in the same Python
    process) gets it again.

    Example::

        lock = RunLock.acquire("outputs/x")
    """

    _held: dict[str, RunLock] = {}  # locks this process holds, by folder

    def __init__(self, handle):
        self._handle = handle

    @classmethod
    def acquire(cls, output_dir: str | os.PathLike) -> RunLock | None:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; runs are not guarded
            return None
        key = str(Path(output_dir).resolve())
        if key in cls._held:
            return cls._held[key]
        handle = open(Path(output_dir) / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise InputError(
                f"output_dir {output_dir} is in use by another run ({holder}); wait for it to finish "
                "or choose another --output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        cls._held[key] = lock = cls(handle)
        return lock


@dataclass
class RunPlan:
    """What a run does with its output_dir: resume from `checkpoint` (None: start at step 0), or nothing at all
    because the same run already finished there (`complete`). `stale` lists what a fresh start replaces once its
    first step has trained (old checkpoints and results)."""

    output_dir: Path
    checkpoint: str | None = None
    complete: bool = False
    fresh: bool = True
    stale: list[Path] = field(default_factory=list)
    lock: RunLock | None = None
    # what the run's record needs, given once to plan_output_dir: the resolved configuration, the title of its
    # table and card, and {flag: {path, bytes, sha256}} of the data files and model folders it reads (hashed once)
    config: dict[str, Any] = field(default_factory=dict)
    title: str | None = None
    data_records: dict[str, dict[str, Any]] = field(default_factory=dict)


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint-N folder in output_dir, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    return sorted(
        (int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))
    )


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (cut off while saving, truncated or unreadable files), or None.
    Reads headers and archive directories only, never whole weights."""
    from safetensors import safe_open

    state = path / CHECKPOINT_COMPLETE_MARKER
    if not state.is_file():
        return f"no {CHECKPOINT_COMPLETE_MARKER}: cut off while saving"
    try:
        if "global_step" not in json.loads(state.read_text()):
            return f"{CHECKPOINT_COMPLETE_MARKER} has no global_step"
    except (OSError, ValueError) as err:
        return f"{CHECKPOINT_COMPLETE_MARKER} is damaged ({type(err).__name__})"
    for file in sorted(path.rglob("*")):
        if not file.is_file():
            continue
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as handle:
                    handle.keys()
            elif file.suffix in (".pt", ".pth", ".bin"):
                with zipfile.ZipFile(file) as archive:
                    archive.namelist()
            elif file.suffix == ".json":
                json.loads(file.read_text())
        except Exception as err:  # safetensors, zipfile and json raise their own types
            return f"{file.relative_to(path)} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:80]})"
    return None


def file_fingerprint(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """sha256 of a file's bytes: tells whether a data file changed between a run and its resume."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def path_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, or of a folder's content (every file's relative path and bytes; a recipe's
    checkpoint-*/ and runs/ folders, which are not the model, left out): a model folder replaced under the same
    path is a different input. The model card (README.md) is not the model: rewriting it changes nothing."""
    path = Path(path)
    if path.is_file():
        return file_fingerprint(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if relative.parts[0].startswith(("checkpoint-", "runs", ".")) or str(relative) == "README.md":
            continue
        digest.update(str(relative).encode() + b"\0" + file_fingerprint(file).encode())
    return digest.hexdigest()


def model_folders(config: dict[str, Any]) -> dict[str, str]:
    """{flag: folder} of the local model folders a recipe reads (model, teacher, tokenizer, config): a run resumes
    only while their content is the one it started with.

    Example::

        data_files = local_data_files(data_args) | model_folders(config)
    """
    keys = ("model_name_or_path", "teacher_model_name_or_path", "config_name", "tokenizer_name")
    return {f"--{key}": str(config[key]) for key in keys if config.get(key) and os.path.isdir(str(config[key]))}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        value = value.value
    return yaml.safe_load(yaml.safe_dump(value)) if value is not None else None


def _field_defaults(arguments) -> dict[str, Any]:
    defaults = {}
    for obj in argument_objects(arguments):
        for f in dataclasses.fields(obj):
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
    return defaults


def config_differences(recorded: dict[str, Any], current: dict[str, Any], arguments=()) -> list[str]:
    """The keys whose values differ between a recorded configuration and the current one, as "key: old → new",
    ignoring the keys that are safe to change on resume. A key recorded on one side only is compared with its
    dataclass default (config.yaml leaves transformers' defaults out)."""
    defaults = _field_defaults(arguments)
    differences = []
    for key in sorted(set(recorded) | set(current)):
        if key in SAFE_ON_RESUME:
            continue
        old = _plain(recorded.get(key, defaults.get(key)))
        new = _plain(current.get(key, defaults.get(key)))
        if old != new and not (old in (None, [], "") and new in (None, [], "")):
            differences.append(f"{key}: {old!r} → {new!r}")
    return differences


def data_file_records(data_files: dict[str, str]) -> dict[str, dict[str, Any]]:
    """{flag: {path, bytes, sha256}} of the local data files (and model folders) a run reads."""
    return {
        flag: {"path": path, "bytes": _size(path), "sha256": path_fingerprint(path)}
        for flag, path in data_files.items()
        if path and os.path.exists(path)
    }


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _data_differences(output_dir: Path, records: dict[str, dict[str, Any]]) -> list[str]:
    try:
        recorded = json.loads((output_dir / RUN_INFO_FILE).read_text()).get("data_files", {})
    except (OSError, ValueError):
        return []
    changed = []
    for flag, now in records.items():
        before = recorded.get(flag)
        if before and before.get("path") == now["path"] and now["sha256"] != before.get("sha256"):
            changed.append(f"{flag} {now['path']}: its content changed")
    return changed


# The arguments naming files and folders a recipe reads: its output_dir may not be, hold or lie in any of them.
READ_BY_RECIPES = (
    "model_name_or_path",
    "config_name",
    "tokenizer_name",
    "teacher_model_name_or_path",
    "dataset_name",
    "train_file",
    "validation_file",
    "test_file",
)


def plan_output_dir(
    training_args,
    run_args,
    config: dict[str, Any],
    arguments=(),
    data_files: dict[str, str] | None = None,
    title: str | None = None,
) -> RunPlan:
    """Decide what this run does with output_dir, before anything in it is touched. The plan carries what the
    run's record needs (`config`, `title`, the data files' fingerprints, each file hashed once here) to
    `RunRecordCallback(plan)` and `finish_run(trainer, results, plan=plan)`.

    - output_dir is, holds or lies inside a model folder or data file the run reads: InputError.
    - Another run holds the folder: InputError.
    - `start_fresh`: train from step 0; the old checkpoints and results are replaced once training has started.
    - The folder records a run with other settings (config.yaml, data files' content): InputError naming the
      differing keys and the two ways out.
    - The folder holds a model or checkpoints but no record of how they were made: InputError.
    - The same run finished there: `complete`.
    - Otherwise resume from the newest checkpoint that loads (broken ones are skipped with a warning naming
      them; if all are broken, InputError).
    """
    check_apart(training_args.output_dir, {f"--{key}": config.get(key) for key in READ_BY_RECIPES})
    records = data_file_records(data_files or {})
    plan = _plan(Path(training_args.output_dir), run_args.start_fresh, config, arguments, records)
    plan.config, plan.title, plan.data_records = config, title, records
    if training_args.process_index == 0:
        plan.output_dir.mkdir(parents=True, exist_ok=True)
        plan.lock = RunLock.acquire(plan.output_dir)
    return plan


def _plan(
    output_dir: Path, start_fresh: bool, config: dict[str, Any], arguments, data_records: dict[str, dict[str, Any]]
) -> RunPlan:
    checkpoints = list_checkpoints(output_dir)
    record = output_dir / CONFIG_FILE
    leftovers = [p for p in (output_dir / RESULTS_FILE, output_dir / RUN_INFO_FILE, record) if p.exists()]
    stale = [path for _, path in checkpoints] + leftovers
    if start_fresh:
        if stale:
            logger.info(
                "start_fresh: %d old checkpoint(s) and the old record in %s are replaced once training has started.",
                len(checkpoints),
                output_dir,
            )
        return RunPlan(
            output_dir,
            fresh=True,
            stale=stale,
        )

    ways_out = "pass --start_fresh true to replace it, or choose another --output_dir"
    has_model = any((output_dir / name).exists() for name in MODEL_FILES)
    if not record.is_file():
        if checkpoints or has_model:
            what = "checkpoints" if checkpoints else "a model"
            raise InputError(
                f"output_dir {output_dir} holds {what} but no {CONFIG_FILE} recording how they were made; {ways_out}"
            )
        return RunPlan(
            output_dir,
            fresh=True,
        )

    try:
        recorded = yaml.safe_load(record.read_text()) or {}
    except yaml.YAMLError:
        raise InputError(f"{record} is damaged; {ways_out}") from None
    differences = config_differences(recorded, config, arguments) + _data_differences(output_dir, data_records)
    if differences:
        listed = "; ".join(differences[:6]) + ("; ..." if len(differences) > 6 else "")
        raise InputError(f"output_dir {output_dir} holds a run with other settings ({listed}); {ways_out}")

    status = None
    if (output_dir / RUN_INFO_FILE).is_file():
        try:
            status = json.loads((output_dir / RUN_INFO_FILE).read_text()).get("status")
        except ValueError:
            status = None
    valid = []
    for step, path in checkpoints:
        problem = checkpoint_problem(path)
        if problem:
            logger.warning("Skipping checkpoint %s: %s.", path, problem)
        else:
            valid.append((step, path))
    if status == "complete" and (output_dir / RESULTS_FILE).is_file():
        return RunPlan(
            output_dir,
            complete=True,
            fresh=False,
        )
    if checkpoints and not valid:
        raise InputError(
            f"output_dir {output_dir} holds no checkpoint that can be loaded (the newest, "
            f"{checkpoints[-1][1].name}: {checkpoint_problem(checkpoints[-1][1])}); pass --start_fresh "
            "true to train from step 0"
        )
    if valid:
        step, path = valid[-1]
        logger.info("Resuming from %s (step %d); pass --start_fresh true to train from step 0 instead.", path, step)
        return RunPlan(
            output_dir,
            checkpoint=str(path),
            fresh=False,
        )
    return RunPlan(
        output_dir,
        fresh=True,
        stale=leftovers,
    )


def check_apart(output_dir: str | os.PathLike, inputs: dict[str, Any], flag: str = "--output_dir") -> None:
    """InputError, before anything is written, when `output_dir` is, lies inside, or contains a folder or file
    the command reads (symlinks resolved): no command writes into or over its own input. `inputs` maps a name
    (a flag, "variant 'x' train_file") to a path, a list of paths, or None; paths that do not exist locally (hub
    ids) are skipped.

    Example::

        check_apart(args.output_dir, {"model_dir": args.model_dir, "--eval_file": args.eval_file})
    """
    out = Path(output_dir).expanduser().resolve()
    for name, value in inputs.items():
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if not path or not Path(str(path)).expanduser().exists():
                continue
            source = Path(str(path)).expanduser().resolve()
            if out == source:
                relation = "is"
            elif out.is_relative_to(source):
                relation = "lies inside"
            elif source.is_relative_to(out):
                relation = "contains"
            else:
                continue
            raise InputError(
                f"{flag} {output_dir} {relation} {name} {path}, which this command reads; it would write into or "
                f"over its own input: choose an {flag} apart from it"
            )
