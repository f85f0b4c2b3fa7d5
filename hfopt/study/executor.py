"""How a study's runs share the machine: one after another (the default), or `parallel` at a time, each run given
its own share: on a CPU machine its physical cores (the run pinned to them, one thread per core), on a GPU
machine its GPUs (CUDA_VISIBLE_DEVICES); each concurrent run has its own rendezvous port.

Example::

    shares = machine_shares(parallel=2)   # on 2 cores: Share(slot=0, threads=1, cpus=[0], port=29501), Share(1, ...)
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

__all__ = ["Share", "machine_shares", "physical_core_groups"]


@dataclass
class Share:
    """One concurrent run's part of the machine."""

    slot: int
    threads: int | None = None  # physical cores of the share: the run's threads (None: the run chooses)
    cpus: list[int] = field(default_factory=list)  # logical CPUs the run is pinned to (empty: not pinned)
    gpus: list[str] | None = None  # CUDA_VISIBLE_DEVICES of the run (None: every GPU)
    port: int | None = None  # main_process_port of a multi-process run (None: accelerate's default)
    host: str = field(default_factory=socket.gethostname)

    def environment(self) -> dict[str, str]:
        """The run's environment for this share. Its thread count is not set here: a run pinned to its CPUs
        counts their physical cores and splits them over its processes (`hfopt.hardware.configure_cpu_threads`)."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus)} if self.gpus is not None else {}

    def launch_args(self, given: list[str]) -> list[str]:
        """`hfopt launch` arguments of this share: its own rendezvous port, so that runs started at the same
        moment never race for accelerate's default one (unless the run names its own)."""
        if self.port is None or any(a.startswith("--main_process_port") for a in given):
            return []
        return ["--main_process_port", str(self.port)]

    def pin(self, pid: int) -> None:
        """Pin a started run (its process, and so every process and thread it starts after) to its CPUs."""
        if self.cpus and hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(pid, self.cpus)
            except OSError:  # the process already ended, or pinning is not allowed here
                pass

    def describe(self) -> dict:
        return {
            "slot": self.slot,
            "host": self.host,
            "threads": self.threads,
            "cpus": self.cpus,
            "gpus": self.gpus,
            "port": self.port,
        }


def _gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def physical_core_groups() -> list[list[int]]:
    """The logical CPUs this process may use, grouped by physical core (hyper-threads of one core together,
    from /sys/devices/system/cpu/cpu*/topology), cores in order of their first CPU."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores: dict[tuple, list[int]] = {}
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            key = (topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()
        except OSError:  # no topology (not Linux, a container hiding it): every logical CPU a core
            key = ("cpu", str(cpu))
        cores.setdefault(key, []).append(cpu)
    return sorted(cores.values())


PORT_BASE = 29500  # accelerate's default main_process_port; share k uses PORT_BASE + 1 + k


def machine_shares(parallel: int = 1, gpus_per_run: int | None = None) -> list[Share]:
    """`parallel` shares of this machine. With GPUs: `gpus_per_run` each (unset: the GPUs split evenly); more
    than the machine has is an InputError. Without: the physical cores split into `parallel` groups, each run
    pinned to its cores' logical CPUs (hyper-threads of a core stay in one share). With `parallel > 1` each share
    also has its own rendezvous port. `parallel=1` leaves the run alone (the whole machine)."""
    if parallel < 1:
        raise InputError(f"parallel must be ≥ 1, got {parallel}")
    gpus = _gpus()
    port = (lambda slot: PORT_BASE + 1 + slot) if parallel > 1 else (lambda slot: None)
    if gpus:
        per_run = gpus_per_run or max(1, len(gpus) // parallel)
        if parallel * per_run > len(gpus):
            raise InputError(
                f"{parallel} runs at once with {per_run} GPU(s) each need {parallel * per_run} GPUs; "
                f"this machine has {len(gpus)}"
            )
        if parallel == 1 and gpus_per_run is None:
            return [Share(0)]
        return [
            Share(slot, gpus=gpus[slot * per_run : (slot + 1) * per_run], port=port(slot)) for slot in range(parallel)
        ]
    if gpus_per_run is not None:
        raise InputError(f"gpus_per_run is {gpus_per_run} but this machine has no GPU")
    if parallel == 1:
        return [Share(0)]
    cores = physical_core_groups()
    if parallel > len(cores):
        raise InputError(
            f"{parallel} runs at once need at least {parallel} physical cores; this machine gives {len(cores)}"
        )
    per_run = len(cores) // parallel
    shares = []
    for slot in range(parallel):
        mine = cores[slot * per_run : (slot + 1) * per_run]
        shares.append(Share(slot, threads=len(mine), cpus=[cpu for core in mine for cpu in core], port=port(slot)))
    return shares
