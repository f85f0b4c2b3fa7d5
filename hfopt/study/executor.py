"""How a study's runs share the machine: one after another (the default), or `parallel` at a time, each run given
its own share: on a CPU machine its cores (pinned) and as many threads (OMP_NUM_THREADS), on a GPU machine its
GPUs (CUDA_VISIBLE_DEVICES).

Example::

    shares = machine_shares(parallel=2)   # on 2 cores: [Share(slot=0, threads=1, cpus=[0]), Share(1, 1, [1])]
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from ..errors import InputError
from ..hardware import physical_cores

__all__ = ["Share", "machine_shares"]


@dataclass
class Share:
    """One concurrent run's part of the machine."""

    slot: int
    threads: int | None = None  # OMP_NUM_THREADS of the run (None: left to the run, as without --parallel)
    cpus: list[int] = field(default_factory=list)  # logical CPUs the run is pinned to (empty: not pinned)
    gpus: list[str] | None = None  # CUDA_VISIBLE_DEVICES of the run (None: every GPU)
    host: str = field(default_factory=socket.gethostname)

    def environment(self) -> dict[str, str]:
        env = {}
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = str(self.threads)
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        return env

    def pin(self, pid: int) -> None:
        """Pin a started run (its process, and so every process and thread it starts after) to its CPUs."""
        if self.cpus and hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(pid, self.cpus)
            except OSError:  # the process already ended, or pinning is not allowed here
                pass

    def describe(self) -> dict:
        return {"slot": self.slot, "host": self.host, "threads": self.threads, "cpus": self.cpus, "gpus": self.gpus}


def _gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def machine_shares(parallel: int = 1, gpus_per_run: int | None = None) -> list[Share]:
    """`parallel` shares of this machine. With GPUs: `gpus_per_run` each (unset: the GPUs split evenly); more
    than the machine has is an InputError. Without: the CPUs split into `parallel` groups of adjacent logical
    CPUs, each run pinned to its group with one thread per physical core of it. `parallel=1` leaves the run
    alone (all the machine, threads chosen by the run itself)."""
    if parallel < 1:
        raise InputError(f"parallel must be ≥ 1, got {parallel}")
    gpus = _gpus()
    if gpus:
        per_run = gpus_per_run or max(1, len(gpus) // parallel)
        if parallel * per_run > len(gpus):
            raise InputError(
                f"{parallel} runs at once with {per_run} GPU(s) each need {parallel * per_run} GPUs; "
                f"this machine has {len(gpus)}"
            )
        if parallel == 1 and gpus_per_run is None:
            return [Share(0)]
        return [Share(slot, gpus=gpus[slot * per_run : (slot + 1) * per_run]) for slot in range(parallel)]
    if gpus_per_run is not None:
        raise InputError(f"gpus_per_run is {gpus_per_run} but this machine has no GPU")
    if parallel == 1:
        return [Share(0)]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if parallel > len(cpus):
        raise InputError(f"{parallel} runs at once need at least {parallel} CPUs; this machine gives {len(cpus)}")
    threads = max(1, physical_cores() // parallel)
    per_run = len(cpus) // parallel
    return [Share(slot, threads=threads, cpus=cpus[slot * per_run : (slot + 1) * per_run]) for slot in range(parallel)]
