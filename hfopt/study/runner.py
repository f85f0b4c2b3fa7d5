"""Running a study: each run its own `hfopt launch` subprocess with its own output folder and log, one progress
bar over the runs (and the run's own below it), finished runs skipped and unfinished ones resumed on a rerun,
a failed run recorded with its error line while the others go on.

Example::

    records = run_study(load_study("study.yaml"), Path("outputs/study"))
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..run import write_json_atomic
from .spec import Run, Study

logger = logging.getLogger(__name__)

__all__ = ["RunRecord", "is_complete", "run_study"]

PROGRESS = re.compile(r"(\d+)/(\d+) \[")


@dataclass
class RunRecord:
    """What the study knows about one run: its status, the seconds each attempt took, its error line."""

    variant: str
    seed: int
    status: str = "pending"  # pending, complete, failed
    attempts: list[dict] = field(default_factory=list)
    error: str | None = None

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
        return RunRecord(**{k: data[k] for k in ("variant", "seed", "status", "attempts", "error") if k in data})
    return RunRecord(run.variant, run.seed)


def _error_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("error: ", "stopped: ")):
            return line
    return lines[-1][:300] if lines else "no output"


def _run_once(run: Run, root: Path, bar) -> tuple[int, float, Path]:
    """Launch a run, its output to a log file, its progress to the inner bar; returns (exit code, seconds, log)."""
    log = root / "logs" / f"{run.variant}--seed-{run.seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TENSORBOARD_LOGGING_DIR": str(root / "tensorboard" / run.variant / f"seed-{run.seed}")}
    started = time.perf_counter()
    with open(log, "ab") as sink:
        sink.write(f"\n$ {' '.join(run.command(sys.executable))}\n".encode())
        sink.flush()
        proc = subprocess.Popen(run.command(sys.executable), stdout=sink, stderr=subprocess.PIPE, env=env)
        pending = b""
        while chunk := proc.stderr.read1(4096):
            sink.write(chunk)
            pending = (pending + chunk)[-2048:]
            if bar is not None and (found := PROGRESS.findall(pending.decode(errors="replace"))):
                done, total = map(int, found[-1])
                bar.total, bar.n = total, done
                bar.refresh()
        proc.wait()
    return proc.returncode, time.perf_counter() - started, log


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


def run_study(study: Study, root: Path, fail_fast: bool = False, progress: bool = True) -> dict[str, RunRecord]:
    """Run every run of the study that has not finished, in order; returns the record of each run by name.

    A finished run (its run_info.json says complete) is skipped; an unfinished one resumes from its own
    checkpoints (the recipes do that when launched again on the same output folder). A failed run is recorded
    with its error line and the study goes on, unless `fail_fast`.
    """
    from tqdm.auto import tqdm

    runs = study.runs(root)
    records = {run.name: load_record(root, run) for run in runs}
    todo = [run for run in runs if not is_complete(run.output_dir)]
    outer = tqdm(
        total=len(runs),
        initial=len(runs) - len(todo),
        desc=f"study {study.name}",
        unit="run",
        disable=not progress or None,
        position=0,
    )
    inner = tqdm(total=1, desc="run", leave=False, disable=not progress or None, position=1)
    for run in runs:
        record = records[run.name]
        if run in todo:
            outer.set_postfix_str(run.name)
            inner.reset(total=1)
            code, seconds, log = _run_once(run, root, inner)
            record.attempts.append(
                {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": seconds, "exit_code": code}
            )
            if code == 0 and is_complete(run.output_dir):
                record.status, record.error = "complete", None
            else:
                record.status, record.error = "failed", _error_line(log)
                logger.warning("Run %s failed: %s (log: %s)", run.name, record.error, log)
            outer.update(1)
        elif record.status != "complete":
            record.status = "complete"
        if record.status == "complete" and study.compress:
            try:
                _compress(study, run, root)
            except RuntimeError as err:
                record.status, record.error = "failed", f"compress: {err}"
        write_json_atomic(_record_path(root, run), asdict(record))
        if fail_fast and record.status == "failed":
            break
    inner.close()
    outer.close()
    return records
