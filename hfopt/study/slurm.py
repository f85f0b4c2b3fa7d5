"""A study's runs as the tasks of one Slurm job array, submitted through submitit: each task launches the same
`hfopt launch ...` command line the run has on this machine (its accelerate config included), its log and
output folder in the study folder as locally; the submitting side waits, records each task's job id, host and
Slurm state, and a rerun of the study re-attaches to tasks still queued or running.

Example (the study file)::

    executor: slurm
    slurm:
      partition: gpu
      time_min: 120
      cpus_per_run: 8
      mem_gb: 32
      slurm_array_parallelism: 4
      sbatch: {account: myproject, qos: normal}    # any other sbatch option
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["SlurmSettings", "check_slurm", "ended_task", "run_on_slurm", "slurm_state"]

# Slurm states that end a task without its command finishing: the run was killed, not wrong.
KILLED_STATES = ("CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY", "DEADLINE", "BOOT_FAIL")
ALIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "CONFIGURING", "COMPLETING")
COMMANDS = ("sbatch", "srun", "squeue", "scancel", "scontrol")
FREE_PORT = "{free_port}"  # in a task's command: a port free on its node when the task starts


@dataclass
class SlurmSettings:
    """The `slurm:` block of a study file: where and with what each run's task asks Slurm to run."""

    partition: str | None = None  # the partition (default: the cluster's)
    time_min: int = 60  # each task's time limit in minutes: Slurm kills the task after it (rerun to resume)
    cpus_per_run: int = 1  # CPUs of each task (its threads on a CPU run)
    mem_gb: float | None = None  # memory of each task (default: the partition's)
    slurm_array_parallelism: int | None = None  # tasks of the array running at once (default: all)
    sbatch: dict[str, Any] = field(default_factory=dict)  # any other sbatch option, as {option: value}
    setup: list[str] = field(default_factory=list)  # shell lines each task runs first (module load ..., source ...)

    @classmethod
    def from_mapping(cls, data: Any, where: str) -> SlurmSettings:
        """Settings from a study file's `slurm:` mapping: an unknown key or a wrong type is one InputError."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise InputError(f"{where}: slurm takes a mapping of settings, got {data!r}")
        known = list(cls.__dataclass_fields__)
        for key in data:
            if key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                raise InputError(
                    f"{where}: unknown Slurm setting '{key}'"
                    + (f" (did you mean '{hint[0]}'?)" if hint else "")
                    + "; other sbatch options go under slurm: sbatch: {option: value}"
                )
        for key in ("time_min", "cpus_per_run", "slurm_array_parallelism"):
            value = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{where}: slurm {key} takes a whole number ≥ 1, got {value!r}")
        mem = data.get("mem_gb")
        if mem is not None and (isinstance(mem, bool) or not isinstance(mem, (int, float)) or mem <= 0):
            raise InputError(f"{where}: slurm mem_gb takes a number > 0, got {mem!r}")
        if not isinstance(data.get("sbatch", {}), dict):
            raise InputError(f"{where}: slurm sbatch takes a mapping of sbatch options, got {data['sbatch']!r}")
        setup = data.get("setup", [])
        if not isinstance(setup, list) or not all(isinstance(line, str) for line in setup):
            raise InputError(f"{where}: slurm setup takes a list of shell lines, got {setup!r}")
        return cls(**data)

    def parameters(self, gpus_per_run: int | None, tasks: int) -> dict[str, Any]:
        """submitit's `update_parameters` keywords for an array of `tasks` runs."""
        extra = {k.replace("_", "-"): v for k, v in self.sbatch.items()}
        return {
            "timeout_min": self.time_min,
            "cpus_per_task": self.cpus_per_run,
            "slurm_array_parallelism": self.slurm_array_parallelism or tasks,
            **({"slurm_partition": self.partition} if self.partition else {}),
            **({"mem_gb": self.mem_gb} if self.mem_gb else {}),
            **({"gpus_per_node": gpus_per_run} if gpus_per_run else {}),
            **({"slurm_setup": list(self.setup)} if self.setup else {}),
            **({"slurm_additional_parameters": extra} if extra else {}),
        }


def sbatch_options() -> set[str]:
    """The long options this cluster's sbatch knows (from `sbatch --help`, which also needs the cluster's
    configuration: without one, sbatch's own line is the InputError)."""
    out = subprocess.run(["sbatch", "--help"], capture_output=True, text=True)
    if out.returncode != 0:
        said = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(
            f"executor: slurm: sbatch finds no cluster here ({said}); set SLURM_CONF or run on a login node"
        )
    return set(re.findall(r"--([a-z][a-z0-9-]*)", out.stdout))


def check_slurm(settings: SlurmSettings) -> None:
    """Before any job is submitted: Slurm's commands on PATH, submitit installed, and every `sbatch:` option one
    this sbatch knows. Each problem is one InputError naming it."""
    missing = [command for command in COMMANDS if shutil.which(command) is None]
    if missing:
        raise InputError(
            f"executor: slurm needs Slurm's {missing[0]} command on PATH, and it is not found here; run the study on "
            "this machine instead with executor: local (or --executor local), --parallel N for runs at once"
        )
    if importlib.util.find_spec("submitit") is None:
        raise InputError('executor: slurm submits through submitit: pip install "hfopt[slurm]"')
    known = sbatch_options()
    for key in settings.sbatch:
        option = str(key).replace("_", "-")
        if option not in known:
            hint = difflib.get_close_matches(option, sorted(known), n=1)
            raise InputError(
                f"slurm sbatch: '{key}' is not an option of this cluster's sbatch"
                + (f" (did you mean '{hint[0]}'?)" if hint else "")
            )


def slurm_state(job_id: str) -> str | None:
    """The Slurm state of a job or array task ('RUNNING', 'CANCELLED', ...; None when Slurm no longer knows it)."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.split()[0]
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    found = re.search(r"JobState=(\S+)", out.stdout)
    return found.group(1) if found else None


def run_logged(command: list[str], env_changes: dict[str, str | None], log: str) -> dict[str, Any]:
    """What each array task runs (on the node): the run's command (its `FREE_PORT` a port free on the node), its
    output appended to its log in the study folder; returns the attempt's record (exit code, host, start, end).
    A CPU task without CPU binding gets one thread per CPU Slurm gave it."""
    if FREE_PORT in command:
        with socket.socket() as probe:
            probe.bind(("", 0))
            command = [str(probe.getsockname()[1]) if a == FREE_PORT else a for a in command]
    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    cpus = env.get("SLURM_CPUS_PER_TASK")
    if cpus and "OMP_NUM_THREADS" not in env and len(os.sched_getaffinity(0)) > int(cpus):
        env["OMP_NUM_THREADS"] = cpus
    started, start = time.perf_counter(), time.time()
    job = env.get("SLURM_ARRAY_JOB_ID")
    job_id = f"{job}_{env.get('SLURM_ARRAY_TASK_ID')}" if job else env.get("SLURM_JOB_ID")
    with open(log, "ab") as sink:
        sink.write(f"\n# Slurm job {job_id} on {socket.gethostname()}\n$ {' '.join(command)}\n".encode())
        sink.flush()
        code = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, env=env).returncode
    return {
        "exit_code": code,
        "host": socket.gethostname(),
        "start": start,
        "end": time.time(),
        "seconds": time.perf_counter() - started,
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start)),
    }


def run_on_slurm(
    settings: SlurmSettings,
    gpus_per_run: int | None,
    folder: Path,
    tasks: list[tuple[Any, list[str], dict[str, str | None], Path, str | None]],
    submitted,
    finish,
    poll_s: float = 1.0,
) -> None:
    """Run `tasks` ((run, command, env_changes, log, job id of an earlier submission or None)) as one job array
    (tasks whose earlier job is still queued or running are re-attached instead); `submitted(run, job_id)` is
    called once each task is queued, `finish(run, result)` as each ends. When `finish` says the study stops
    (`fail_fast`), the tasks still queued are cancelled and given back (`submitted(run, None)`); those already
    running finish, as locally. Task states come from squeue and scontrol (no accounting database needed)."""
    import submitit
    from submitit.core.utils import FailedJobError

    jobs = {}
    fresh = []
    for run, command, env_changes, log, job_id in tasks:
        if job_id and slurm_state(job_id) in ALIVE_STATES:
            jobs[run.name] = (run, submitit.SlurmJob(folder=folder, job_id=job_id), log)
        else:
            fresh.append((run, command, env_changes, log))
    if fresh:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(name="hfopt-study", **settings.parameters(gpus_per_run, len(fresh)))
        try:
            with executor.batch():
                queued = [executor.submit(run_logged, command, env, str(log)) for _, command, env, log in fresh]
        except FailedJobError as err:  # sbatch refused the array (a partition, a time limit, an option's value)
            said = [line for line in str(err).splitlines() if "error" in line.lower()] or str(err).splitlines()
            raise InputError(f"sbatch refused the study's job array: {said[-1].strip()}") from None
        for (run, _, _, log), job in zip(fresh, queued, strict=True):
            submitted(run, job.job_id)
            jobs[run.name] = (run, job, log)
    going = True
    while jobs:
        states = _states([job.job_id for _, job, _ in jobs.values()])
        for name, (run, job, log) in list(jobs.items()):
            if states.get(job.job_id) in ALIVE_STATES:
                continue
            del jobs[name]
            going = finish(run, _outcome(job, log)) and going
        if not going:
            for name, (run, job, _) in list(jobs.items()):
                if (states.get(job.job_id) or slurm_state(job.job_id)) == "PENDING":
                    job.cancel(check=False)
                    submitted(run, None)
                    del jobs[name]
        if jobs:
            time.sleep(poll_s)


def ended_task(folder: Path, job_id: str, log: Path) -> dict[str, Any] | None:
    """The attempt's record of a task that ended while no one waited for it (None while it is queued or
    running)."""
    import submitit

    if shutil.which("squeue") is None or slurm_state(job_id) in ALIVE_STATES:
        return None
    return _outcome(submitit.SlurmJob(folder=folder, job_id=job_id), log)


def _states(job_ids: list[str]) -> dict[str, str | None]:
    """The Slurm state of each job or array task, in one squeue call (one call each when squeue refuses the
    list, e.g. for a job Slurm has forgotten); None for one that ended or that Slurm no longer knows."""
    out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i|%T"], capture_output=True, text=True)
    if out.returncode != 0:
        return {job_id: slurm_state(job_id) for job_id in job_ids}
    listed = dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)
    return {job_id: listed.get(job_id) for job_id in job_ids}


def _final_state(job, timeout_s: float = 120.0) -> str:
    """The task's state once Slurm has ended it (its result file can come first, while Slurm still says
    RUNNING or COMPLETING); UNKNOWN when Slurm no longer knows the task."""
    deadline = time.time() + timeout_s
    while True:
        state = (slurm_state(job.job_id) or "UNKNOWN").split()[0]
        if state not in ALIVE_STATES or time.time() > deadline:
            return state
        time.sleep(0.5)


def _outcome(job, log: Path) -> dict[str, Any]:
    """The attempt's record of an ended task: its command's record, or why it did not finish. Read from the
    task's result file (no waiting for one that never comes)."""
    from submitit.core.utils import pickle_load

    state = _final_state(job)
    result: dict[str, Any] = {"exit_code": None, "seconds": 0.0}
    said = None
    if job.paths.result_pickle.exists():
        outcome, payload = pickle_load(job.paths.result_pickle)
        if outcome == "success":
            result = dict(payload)
        else:  # an exception in the task: submitit's on a time limit or pre-emption, else hfopt's
            said = str(payload).strip().splitlines()[-1] if str(payload).strip() else "no traceback"
    timed_out = said is not None and ("timed-out" in said or "preempted" in said)
    if state.startswith(KILLED_STATES) or timed_out:
        if result["exit_code"] != 0:
            why = "its time limit (slurm: time_min)" if "timed-out" in (said or "") else state
            result["error"] = f"killed by Slurm ({why}); rerun the study to resume it from its last checkpoint"
            result["killed"] = True
    elif said is not None:
        result["error"] = f"the Slurm task failed: {said}"
    elif result["exit_code"] is None:
        result["error"] = f"ended by Slurm without a result ({state}); its log: {job.paths.stderr}"
        result["killed"] = True
    return {**result, "slurm_job_id": job.job_id, "slurm_state": state, "log": str(log)}
