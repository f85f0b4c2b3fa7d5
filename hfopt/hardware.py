"""What the machine offers a run: CPU threads per process, the CPU's int8/bf16 instruction sets, and which
mixed precision the run really uses (fp16 needs CUDA).

Example::

    threads, reason = configure_cpu_threads()      # at the start of a recipe
    cpu_info()["bf16"]                              # True on CPUs with AVX512-BF16 or AMX
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import sys
from pathlib import Path

from .errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "check_precision",
    "configure_cpu_threads",
    "cpu_info",
    "mixed_precision",
    "peak_memory_mb",
    "physical_cores",
    "use_gloo_without_accelerator",
]

# Launchers that set OMP_NUM_THREADS=1 in the processes they start when the user did not set it.
_LAUNCHERS = ("accelerate", "torchrun", "torch.distributed.run", "deepspeed")


def physical_cores() -> int:
    """Physical cores this process may run on (logical CPUs in its affinity mask, halved with hyper-threading)."""
    import psutil

    logical = psutil.cpu_count(logical=True) or 1
    physical = psutil.cpu_count(logical=False) or logical
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return max(1, physical * min(usable, logical) // logical)


def _local_processes() -> int:
    for key in ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE"):
        if os.environ.get(key, "").isdigit():
            return max(1, int(os.environ[key]))
    return 1


def _launcher_environment() -> tuple[str, dict[str, str], list[str]] | None:
    """(name, original environment, command line) of the nearest launcher process above this one, from /proc
    (Linux). None when there is none or /proc cannot tell."""
    pid = os.getppid()
    for _ in range(6):  # launcher → (elastic agent) → worker: a few levels at most
        proc = Path("/proc") / str(pid)
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            status = (proc / "status").read_text()
        except OSError:
            return None
        name = next((n for n in _LAUNCHERS if any(n in part for part in argv[:3])), None)
        if name is not None:
            try:
                raw = (proc / "environ").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                return None
            environ = dict(item.split("=", 1) for item in raw if "=" in item)
            return name, environ, argv
        ppid = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "0")
        if ppid in ("0", "1"):
            return None
        pid = int(ppid)
    return None


def configure_cpu_threads() -> tuple[int, str]:
    """Give each training process on a CPU its share of the machine: physical cores / local processes threads.

    `accelerate launch` without a CPU config (and torchrun) set OMP_NUM_THREADS=1 in the processes they start,
    which trains on one core of many. A thread count the user chose (OMP_NUM_THREADS in their shell, or
    `accelerate launch --num_cpu_threads_per_process N`) is kept. Runs with a GPU are left alone. Returns the
    thread count and where it came from, and logs both.

    Example::

        configure_cpu_threads()   # (2, 'physical cores / local processes') on a 2-core machine
    """
    import torch

    if torch.cuda.is_available() or _accelerator_in_use():
        return torch.get_num_threads(), "GPU run: left as it is"
    wanted = max(1, physical_cores() // _local_processes())
    current = os.environ.get("OMP_NUM_THREADS")
    launcher = _launcher_environment() if current is not None else None
    if current is not None and launcher is None:
        reason = "OMP_NUM_THREADS set by you"
    elif current is not None:
        name, environ, argv = launcher
        if "OMP_NUM_THREADS" in environ:
            reason = "OMP_NUM_THREADS set by you"
        elif any(a.startswith("--num_cpu_threads_per_process") for a in argv):
            reason = f"{name} launch --num_cpu_threads_per_process"
        else:  # the launcher's default of one thread
            current = None
    if current is not None and current.isdigit():
        threads = int(current)
    else:
        threads, reason = wanted, f"physical cores / local processes = {physical_cores()} / {_local_processes()}"
        os.environ["OMP_NUM_THREADS"] = str(threads)  # for subprocesses (data workers, tokenizers)
    torch.set_num_threads(threads)
    logger.info("CPU threads per process: %d (%s)", threads, reason)
    return threads, reason


def use_gloo_without_accelerator() -> None:
    """Make a multi-process launch on a machine without GPUs real CPU data parallelism (gloo).

    accelerate only picks its MULTI_CPU mode when told the run is on CPU; with a GPU config such as
    accelerate_configs/multi_gpu.yaml on a CPU-only machine every process would otherwise train alone.
    """
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
        os.environ["ACCELERATE_USE_CPU"] = "true"


def _accelerator_in_use() -> bool:
    import torch

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return not use_cpu and torch.accelerator.is_available()


def cpu_info() -> dict:
    """The CPU's model name, core counts and the instruction sets int8/bf16 speed-ups depend on (VNNI for int8
    dot products, AVX512-BF16 and AMX for bf16 matrix work). Benchmarks record it next to their figures."""
    import psutil
    import torch

    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {
        "model": model,
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cpus": psutil.cpu_count(logical=True),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "avx512_bf16": "avx512_bf16" in flags or torch.cpu._is_avx512_bf16_supported(),
        "amx": "amx_tile" in flags or torch.cpu._is_amx_tile_supported(),
        "bf16": "avx512_bf16" in flags or "amx_bf16" in flags or torch.cpu._is_avx512_bf16_supported(),
    }


def mixed_precision(training_args) -> str:
    """The run's mixed precision, "no", "fp16" or "bf16", from --fp16/--bf16 or the accelerate config."""
    if getattr(training_args, "fp16", False):
        return "fp16"
    if getattr(training_args, "bf16", False):
        return "bf16"
    mode = str(getattr(training_args, "mixed_precision", "no") or "no")
    return mode if mode in ("fp16", "bf16") else "no"


def check_precision(training_args) -> None:
    """fp16 needs a CUDA (or ROCm) GPU; without one, fail instead of training in a precision that isn't there."""
    import torch

    if mixed_precision(training_args) == "fp16" and not torch.cuda.is_available():
        raise InputError(
            "fp16 mixed precision needs a CUDA GPU and this machine has none: drop --fp16 "
            "(or the fp16 accelerate config) and train in fp32, or in bf16 on CPUs that have it "
            "(accelerate_configs/cpu_bf16.yaml)"
        )


def peak_memory_mb() -> float:
    """Peak CUDA memory allocated by this process, or its peak resident memory on CPU, in MiB."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10
