"""Running a study: each run its own `hfopt launch` subprocess with its own output folder and log, one progress
bar over the runs (and the run's own below it), finished runs skipped and unfinished ones resumed on a rerun,
a failed run recorded with its error line while the others go on. In the trackers (`--report_to`) each run is named
`variant/seed-n` and grouped by the study (see `launch_command`).

Example::

    records = run_study(load_study("study.yaml"), Path("outputs/study"))
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..run import RunLock, config_differences, write_json_atomic
from ..run.output_dir import check_apart, file_fingerprint
from .executor import Share, machine_shares
from .slurm import ALIVE_STATES, FREE_PORT, check_slurm, ended_task, run_on_slurm, slurm_state
from .spec import Run, Study, check_variant_flags

logger = logging.getLogger(__name__)

__all__ = [
    "RunRecord",
    "check_study_dir",
    "launch_command",
    "run_study",
    "spec_differences",
    "study_spec",
    "tracking_env",
    "tracking_flags",
]

PROGRESS = re.compile(r"(\d+)/(\d+) \[")
SPEC_FILE = "study_spec.json"  # what the runs in a study folder were made with (see `study_spec`)
# Everything a study writes in its folder: what --start_fresh removes.
STUDY_OUTPUTS = (
    "runs",
    "records",
    "logs",
    "compressed",
    "tensorboard",
    "plots",
    "study.json",
    "study.csv",
    "study.md",
    "study.yaml",
    "slurm",
    SPEC_FILE,
)
# Recipe flags that name files or folders a run reads.
INPUT_SUFFIXES = ("_file", "_files", "_name_or_path")
INPUT_FLAGS = {"tokenizer_name", "config_name", "prune_vocabulary", "importance_file", "calibration_file"}
WAYS_OUT = "pass --start_fresh to run the study again from scratch there, or choose another --output_dir"


@dataclass
class RunRecord:
    """What the study knows about one run: its status, the seconds each attempt took, its error line."""

    variant: str
    seed: int
    status: str = "pending"  # pending, submitted (to Slurm), complete, failed, killed (by Slurm)
    attempts: list[dict] = field(default_factory=list)
    error: str | None = None
    job: str | None = None  # the Slurm job id of its task while queued or running (a rerun re-attaches to it)

    @property
    def wall_seconds(self) -> float:
        return sum(a.get("seconds", 0.0) for a in self.attempts)


def is_complete(output_dir: Path) -> bool:
    """Whether a run's output folder holds a finished run (run_info.json says so, and its results exist)."""
    try:
        info = json.loads((output_dir / "run_info.json").read_text())
    except (OSError, ValueError):
        return False
    return info.get("status") == "complete" and (output_dir / "all_results.json").is_file()


def _record_path(root: Path, run: Run) -> Path:
    return root / "records" / f"{run.variant}--seed-{run.seed}.json"


def load_record(root: Path, run: Run) -> RunRecord:
    path = _record_path(root, run)
    if path.is_file():
        data = json.loads(path.read_text())
        return RunRecord(**{k: data[k] for k in ("variant", "seed", "status", "attempts", "error", "job") if k in data})
    return RunRecord(run.variant, run.seed)


def _error_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("error: ", "stopped: ")):
            return line
    return lines[-1][:300] if lines else "no output"


def tracking_flags(study: Study, run: Run) -> list[str]:
    """The recipe flags that name a run in the trackers: `--run_name <variant>/seed-<n>` (the run's name in MLflow,
    trackio, W&B, ...) and `--project <study name>` (trackio's project: the study's runs side by side), each unless
    the study sets it itself. Both only change how a run is logged: an unfinished run resumes with them."""
    config = study.resolved.get(run.variant, {})
    given = {token[2:].split("=", 1)[0] for token in run.flags if token.startswith("--")}
    flags = []
    if "run_name" not in given and not config.get("run_name"):
        flags += ["--run_name", run.name]
    if "project" not in given and config.get("project") in (None, "huggingface"):  # transformers' default
        flags += ["--project", study.name]
    return flags


def tracking_env(study: Study, run: Run, root: Path, environ: dict[str, str] | None = None) -> dict[str, str | None]:
    """The environment variables that group a study's runs in transformers' tracker integrations (`--report_to`):

    - TensorBoard: `TENSORBOARD_LOGGING_DIR` = OUT/tensorboard/<variant>/seed-<n> (`tensorboard --logdir
      OUT/tensorboard` shows each run as `variant/seed-n`);
    - MLflow: `MLFLOW_EXPERIMENT_NAME` = the study's name (unless set), `MLFLOW_TAGS` with hfopt.study,
      hfopt.variant and hfopt.seed (added to the user's own), and no inherited `MLFLOW_RUN_ID` (every run would
      resume that one run);
    - Weights & Biases: `WANDB_RUN_GROUP` = the study's name (unless set).

    trackio takes its grouping from flags (`tracking_flags`). `environ`: the environment the study runs in
    (os.environ by default); returns only the variables to set on top of it, and the ones to drop as None."""
    environ = dict(os.environ if environ is None else environ)
    env: dict[str, str | None] = {
        "TENSORBOARD_LOGGING_DIR": str(root / "tensorboard" / run.variant / f"seed-{run.seed}"),
    }
    for key in ("MLFLOW_EXPERIMENT_NAME", "WANDB_RUN_GROUP"):
        if not environ.get(key):
            env[key] = study.name
    try:
        tags = json.loads(environ.get("MLFLOW_TAGS") or "{}")
    except ValueError:
        tags = {}
    tags = tags if isinstance(tags, dict) else {}
    env["MLFLOW_TAGS"] = json.dumps(
        {**tags, "hfopt.study": study.name, "hfopt.variant": run.variant, "hfopt.seed": str(run.seed)}
    )
    if "MLFLOW_RUN_ID" in environ:
        env["MLFLOW_RUN_ID"] = None
    return env


def launch_command(study: Study, run: Run, root: Path, python: str = sys.executable) -> tuple[list[str], dict]:
    """(command line, environment) of a run as the study launches it: `run.command` with `tracking_flags`, the
    study's environment with `tracking_env`.

    Example::

        command, env = launch_command(study, study.runs(root)[0], root)
    """
    env = {**os.environ}
    for key, value in tracking_env(study, run, root, env).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return [*run.command(python), *tracking_flags(study, run)], env


def _run_once(study: Study, run: Run, root: Path, bar, share: Share) -> dict[str, Any]:
    """Launch a run on its share of the machine, its output to a log file, its progress to the inner bar; returns
    the attempt's record (exit code, start and end, seconds, log, the share)."""
    log = root / "logs" / f"{run.variant}--seed-{run.seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command, env = launch_command(study, run, root)
    at = command.index("launch") + 1  # `python -m hfopt.cli launch ...`: the share's launch arguments go first
    command[at:at] = share.launch_args(run.launch_args)
    env.update(share.environment())
    started, start = time.perf_counter(), time.time()
    with open(log, "ab") as sink:
        sink.write(f"\n$ {' '.join(command)}\n".encode())
        sink.flush()
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.PIPE, env=env)
        share.pin(proc.pid)
        pending = b""
        while chunk := proc.stderr.read1(4096):
            sink.write(chunk)
            pending = (pending + chunk)[-2048:]
            if bar is not None and (found := PROGRESS.findall(pending.decode(errors="replace"))):
                done, total = map(int, found[-1])
                bar.total, bar.n = total, done
                bar.refresh()
        proc.wait()
    return {
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start)),
        "start": start,
        "end": time.time(),
        "seconds": time.perf_counter() - started,
        "exit_code": proc.returncode,
        "log": str(log),
        **share.describe(),
    }


def _compress(study: Study, run: Run, root: Path) -> None:
    """hfopt compress on a finished run, into OUT/compressed/<variant>/seed-<n> (skipped when already there)."""
    from ..args import to_flags

    out = root / "compressed" / run.variant / f"seed-{run.seed}"
    if (out / "compression_report.json").is_file():
        return
    command = [
        sys.executable,
        "-m",
        "hfopt.cli",
        "compress",
        str(run.output_dir),
        "--eval_file",
        str(study.compress["eval_file"]),
        *to_flags(study.compress.get("args") or {}),
        "--output_dir",
        str(out),
    ]
    log = root / "logs" / f"{run.variant}--seed-{run.seed}.compress.log"
    with open(log, "w") as sink:
        result = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(_error_line(log))


def _input_paths(config: dict) -> dict[str, Any]:
    return {
        key: value
        for key, value in config.items()
        if (key.endswith(INPUT_SUFFIXES) or key in INPUT_FLAGS) and isinstance(value, (str, list)) and value
    }


def study_inputs(study: Study, root: Path | None = None) -> dict[str, Any]:
    """Every local file or folder the study's runs read, by a name for messages: the study file, its config and
    accelerate configs, each variant's data files and model folders, what `compress` reads."""
    inputs: dict[str, Any] = {}
    if root is None or Path(study.path).resolve() != (Path(root) / "study.yaml").resolve():
        inputs["the study file"] = study.path  # a rerun of OUT/study.yaml itself is fine
    inputs["config"] = study.config
    inputs["accelerate_config"] = study.accelerate_config
    for variant in study.variants:
        inputs[f"variant '{variant.name}' accelerate_config"] = variant.accelerate_config
        for key, value in _input_paths(study.resolved.get(variant.name, {})).items():
            inputs[f"variant '{variant.name}' {key}"] = value
    if study.compress:
        inputs["compress eval_file"] = study.compress.get("eval_file")
        for key, value in _input_paths(study.compress.get("args") or {}).items():
            inputs[f"compress {key}"] = value
    return inputs


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def study_spec(study: Study) -> dict[str, Any]:
    """What decides the study's runs and their figures, resolved: the recipe, the seeds, each variant's full
    recipe configuration (as the recipe parses it) and launch setting, compress, and the content (sha256) of
    every local data file they read. Recorded in the study folder (`SPEC_FILE`) so that a rerun of an edited
    study is refused instead of reporting the old runs as the new study's. The name, description, baseline and
    metric only shape the report, which every rerun rebuilds; they are not part of it."""
    variants = {}
    for variant in study.variants:
        config = {k: v for k, v in study.resolved.get(variant.name, {}).items() if k not in ("output_dir", "seed")}
        variants[variant.name] = {
            "config": config,
            "accelerate_config": variant.accelerate_config or study.accelerate_config,
            "launch_args": [*study.launch_args, *variant.launch_args],
        }
    files = {}
    inputs = study_inputs(study)
    for name in ("the study file", "config"):  # their content is the resolved configuration above
        inputs.pop(name, None)
    for value in inputs.values():
        for path in value if isinstance(value, list) else [value]:
            if path and Path(str(path)).is_file():
                files[str(path)] = file_fingerprint(path)
    return _plain(
        {
            "recipe": study.recipe_name,
            "seeds": study.seeds,
            "measure_latency": study.measure_latency,
            "compress": study.compress,
            "variants": variants,
            "files": files,
        }
    )


def spec_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between a recorded study spec and the current one in the runs both have, one item per
    difference ("variant 'cosine' learning_rate: 0.002 → 0.001", "data.csv: its content changed"); seeds and
    variants added or left out are not differences (the recorded spec keeps every variant it ever ran, see
    `merged_spec`, so one left out and brought back with other settings is one), nor are keys that only change
    how a run logs or stores (the recipes' resume allows them)."""
    differences = []
    for key in ("recipe", "measure_latency", "compress"):
        if recorded.get(key) != current.get(key):
            differences.append(f"{key}: {recorded.get(key)!r} → {current.get(key)!r}")
    # seeds and variants added or left out change no existing run: the study grows (or reports fewer runs)
    old, new = recorded.get("variants", {}), current.get("variants", {})
    for name in (n for n in new if n in old):
        differences += [
            f"variant '{name}' {item}" for item in config_differences(old[name]["config"], new[name]["config"])
        ]
        for key in ("accelerate_config", "launch_args"):
            if old[name].get(key) != new[name].get(key):
                differences.append(f"variant '{name}' {key}: {old[name].get(key)!r} → {new[name].get(key)!r}")
    old_files, new_files = recorded.get("files", {}), current.get("files", {})
    differences += [
        f"{path}: its content changed" for path in new_files if old_files.get(path, new_files[path]) != new_files[path]
    ]
    return differences


def check_study_dir(study: Study, root: Path, start_fresh: bool = False) -> None:
    """Whether the study may run in `root`, before anything is written: apart from everything it reads (see
    `check_apart`); a folder; and unless `start_fresh`, either new or holding runs of this same study (its
    recorded spec equal to this one's but for report-only keys). Each refusal is one InputError line."""
    check_apart(root, study_inputs(study, root))
    if root.exists() and not root.is_dir():
        raise InputError(f"--output_dir {root} is a file, not a folder")
    if start_fresh:
        return
    record = root / SPEC_FILE
    if record.is_file():
        try:
            recorded = json.loads(record.read_text())
        except ValueError:
            raise InputError(f"{record} is damaged; {WAYS_OUT}") from None
        differences = spec_differences(recorded, study_spec(study))
        if differences:
            listed = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
            raise InputError(
                f"output_dir {root} holds the runs of a study with other settings ({listed}); its finished runs "
                f"would be reported as this study's: {WAYS_OUT}"
            )
    elif any((root / name).exists() for name in ("runs", "records")):
        raise InputError(
            f"output_dir {root} holds study runs but no {SPEC_FILE} recording how they were made; {WAYS_OUT}"
        )


def prepare_study_dir(study: Study, root: Path, start_fresh: bool = False) -> RunLock | None:
    """`check_study_dir`, then take the folder (a lock: one study at a time), clear an old study's outputs when
    `start_fresh`, and record this study's spec and a copy of its file (for `hfopt compare --report`)."""
    check_study_dir(study, root, start_fresh)
    root.mkdir(parents=True, exist_ok=True)
    lock = RunLock.acquire(root)
    copy = root / "study.yaml"
    own_file = copy.exists() and copy.resolve() == Path(study.path).resolve()
    if start_fresh:
        old = [
            root / name for name in STUDY_OUTPUTS if (root / name).exists() and not (name == "study.yaml" and own_file)
        ]
        if old:
            logger.info("start_fresh: removing the old study's outputs in %s.", root)
        for path in old:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    if not own_file:
        shutil.copyfile(study.path, copy)
    write_json_atomic(root / SPEC_FILE, merged_spec(root / SPEC_FILE, study_spec(study)))
    return lock


def merged_spec(record: Path, current: dict[str, Any]) -> dict[str, Any]:
    """The spec to record: the current one, plus the variants and seeds an earlier record holds that it leaves
    out (their runs stay in the folder; were one brought back with other settings, the rerun is refused)."""
    if not record.is_file():
        return current
    try:
        recorded = json.loads(record.read_text())
    except ValueError:
        return current
    variants = {**recorded.get("variants", {}), **current.get("variants", {})}
    seeds = list(dict.fromkeys([*recorded.get("seeds", []), *current.get("seeds", [])]))
    return {**current, "variants": variants, "seeds": seeds}


def run_study(
    study: Study,
    root: Path,
    fail_fast: bool = False,
    progress: bool = True,
    start_fresh: bool = False,
    parallel: int | None = None,
    executor: str | None = None,
) -> dict[str, RunRecord]:
    """Run every run of the study that has not finished, in the study's order (`Study.runs`: variants
    interleaved across seeds), `parallel` at a time (default: the study's `parallel`, 1), each on its share of
    the machine (`machine_shares`); returns the record of each run by name.

    First the folder is checked and taken (`prepare_study_dir`): a rerun of an edited study into the same folder
    stops with one line unless `start_fresh`. A finished run (its run_info.json says complete) is skipped; an
    unfinished one resumes from its own checkpoints (the recipes do that when launched again on the same output
    folder). A failed run is recorded with its error line and the study goes on, unless `fail_fast` (then no
    further run starts; those already running finish).

    `executor` (default: the study's): "local" runs on this machine; "slurm" submits the unfinished runs as one
    Slurm job array (`hfopt.study.slurm`), each task the same command line, and waits; a run Slurm killed is
    recorded as "killed" and resumes on a rerun.
    """
    from tqdm.auto import tqdm

    executor = executor or study.executor
    if executor == "slurm":
        check_slurm(study.slurm)
        shares = [Share(slot=0)]  # the runs' resources are Slurm's to give, not this machine's
    else:
        shares = machine_shares(study.parallel if parallel is None else parallel, study.gpus_per_run)
    if not study.resolved:  # loaded without check_flags: the spec needs each variant's resolved configuration
        study.resolved = check_variant_flags(study)
    _check_no_live_tasks(study, root, executor, start_fresh)
    lock = prepare_study_dir(study, root, start_fresh)  # noqa: F841  (held for the life of the study)
    runs = study.runs(root)
    records = {run.name: load_record(root, run) for run in runs}
    for run in runs:  # a Slurm task that ended while no `hfopt compare` waited for it: its attempt, recorded
        record = records[run.name]
        if record.status == "submitted" and record.job and executor == "slurm":
            result = ended_task(root / "slurm", record.job, root / "logs" / f"{run.variant}--seed-{run.seed}.log")
            if result is not None:
                _record_attempt(record, run, result)
                write_json_atomic(_record_path(root, run), asdict(record))
    todo = [run for run in runs if not is_complete(run.output_dir)]
    for run in runs:  # finished in an earlier study run
        if run not in todo and records[run.name].status != "complete":
            records[run.name].status = "complete"
    outer = tqdm(
        total=len(runs),
        initial=len(runs) - len(todo),
        desc=f"study {study.name}" + (f", {len(shares)} at a time" if len(shares) > 1 else ""),
        unit="run",
        disable=not progress or None,
        position=0,
    )
    inner = None
    if len(shares) == 1:
        inner = tqdm(total=1, desc="run", leave=False, disable=not progress or None, position=1)

    def attempt(run: Run, share: Share) -> dict[str, Any]:
        if inner is not None:
            outer.set_postfix_str(run.name)
            inner.reset(total=1)
        return _run_once(study, run, root, inner, share)

    def finish(run: Run, result: dict[str, Any] | None) -> bool:
        """Record a run's attempt (None: finished earlier); whether the study goes on."""
        record = records[run.name]
        if result is not None:
            _record_attempt(record, run, result)
            outer.update(1)
        if record.status == "complete" and study.compress:
            try:
                _compress(study, run, root)
            except RuntimeError as err:
                record.status, record.error = "failed", f"compress: {err}"
        write_json_atomic(_record_path(root, run), asdict(record))
        return not (fail_fast and record.status in ("failed", "killed"))

    def submitted(run: Run, job_id: str | None) -> None:  # None: taken back from the queue (not run)
        record = records[run.name]
        record.status, record.job = ("submitted" if job_id else "pending"), job_id
        write_json_atomic(_record_path(root, run), asdict(record))

    if executor == "slurm":
        going = all([finish(run, None) for run in runs if run not in todo])
        if going and todo:
            run_on_slurm(
                study.slurm,
                study.gpus_per_run,
                root / "slurm",
                [(*_slurm_task(study, run, root, i), records[run.name].job) for i, run in enumerate(todo)],
                submitted,
                finish,
            )
    elif len(shares) == 1:
        for run in runs:
            if not finish(run, attempt(run, shares[0]) if run in todo else None):
                break
    else:
        _run_concurrently(runs, todo, shares, attempt, finish)
    if inner is not None:
        inner.close()
    outer.close()
    return records


def _record_attempt(record: RunRecord, run: Run, result: dict[str, Any]) -> None:
    """A run's attempt into its record, and the status it leaves: complete, failed or killed (by Slurm)."""
    record.attempts.append(result)
    record.job = None
    if result["exit_code"] == 0 and is_complete(run.output_dir):
        record.status, record.error = "complete", None
    else:
        record.status = "killed" if result.get("killed") else "failed"
        record.error = result.get("error") or _error_line(Path(result["log"]))
        logger.warning("Run %s failed: %s (log: %s)", run.name, record.error, result["log"])


def _check_no_live_tasks(study: Study, root: Path, executor: str, start_fresh: bool) -> None:
    """A study whose runs are still queued or running on Slurm is neither started afresh nor run here beside
    them (both would write where those tasks write)."""
    if not (start_fresh or executor != "slurm") or shutil.which("squeue") is None:
        return
    jobs = [r.job for r in (load_record(root, run) for run in study.runs(root)) if r.status == "submitted" and r.job]
    live = [job for job in jobs if slurm_state(job) in ALIVE_STATES]
    if live:
        doing = "--start_fresh" if start_fresh else "the local executor"
        raise InputError(
            f"runs of this study are still queued or running on Slurm (jobs {', '.join(live)}): {doing} would write "
            "beside them; rerun with executor: slurm to wait for them, or scancel them first"
        )


def _slurm_task(study: Study, run: Run, root: Path, index: int) -> tuple[Run, list[str], dict, Path]:
    """(run, command, environment changes, log) of a run's Slurm task: the command it has locally, with a
    rendezvous port the task picks free on its node (tasks of the array, and of earlier arrays, may share one)."""
    log = root / "logs" / f"{run.variant}--seed-{run.seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [*run.command(sys.executable), *tracking_flags(study, run)]
    at = command.index("launch") + 1
    if not any(a.startswith("--main_process_port") for a in run.launch_args):
        command[at:at] = ["--main_process_port", FREE_PORT]
    return run, command, tracking_env(study, run, root, dict(os.environ)), log


def _run_concurrently(runs: list[Run], todo: list[Run], shares: list[Share], attempt, finish) -> None:
    """Runs in order, one per free share; each recorded as it ends (compression of a finished run too)."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    going = all([finish(run, None) for run in runs if run not in todo])
    queue, free, running = list(todo), list(shares), {}
    with ThreadPoolExecutor(max_workers=len(shares)) as pool:
        while running or (going and queue):
            while going and queue and free:
                run, share = queue.pop(0), free.pop(0)
                running[pool.submit(attempt, run, share)] = (run, share)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                run, share = running.pop(future)
                free.append(share)
                free.sort(key=lambda s: s.slot)
                try:
                    result = future.result()
                except OSError as err:  # the run could not be started (its log, the launcher): the others go on
                    logger.warning("Run %s could not start: %s", run.name, err)
                    result = {"exit_code": None, "seconds": 0.0, "log": "", "error": f"could not start: {err}"}
                going = finish(run, result) and going
