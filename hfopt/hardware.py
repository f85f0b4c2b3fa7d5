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
from collections.abc import Callable
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
    "suggest_cpu_bf16",
    "adapt_to_launch",
    "launch_changes",
    "launch_defaults",
    "pending_launch_changes",
]

# Launchers that set OMP_NUM_THREADS=1 in the processes they start when the user did not set it, by the
# program (argv[0], or the module after -m) their command line starts with.
_LAUNCHERS = {
    "accelerate": "accelerate",
    "accelerate.commands.launch": "accelerate",
    "torchrun": "torchrun",
    "torch.distributed.run": "torchrun",
    "deepspeed": "deepspeed",
    "hfopt": "hfopt",
    "hfopt.cli": "hfopt",
}


def _launcher_name(argv: list[str]) -> str | None:
    """The launcher a command line runs, or None: `accelerate launch ...`, `python -m accelerate.commands.launch`,
    `hfopt launch ...`, `torchrun ...`, `deepspeed ...`."""
    if not argv or not argv[0]:
        return None
    program = Path(argv[0]).name
    if program.startswith("python") and len(argv) > 2 and argv[1] == "-m":
        program = argv[2]
    elif program.startswith("python") and len(argv) > 1:
        program = Path(argv[1]).name
    name = _LAUNCHERS.get(program)
    if name in ("accelerate", "hfopt") and "launch" not in argv and program != "accelerate.commands.launch":
        return None
    return name


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
        name = _launcher_name(argv)
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


def launch_defaults() -> dict:
    """The TrainingArguments defaults a launch needs (flags and the YAML still win over them). It only reads the
    environment; `adapt_to_launch` makes the changes a launch needs in this process.

    - DeepSpeed without GPUs: accelerate drops DeepSpeed when told "cpu", so the run is left on DeepSpeed and
      given `ddp_backend=gloo` (without a backend name accelerate counts one process). DeepSpeed on CPU trains
      in fp32: a DeepSpeed config asking for bf16/fp16 is an error there.
    - DeepSpeed with mixed precision on GPUs: accelerate writes `bf16.enabled` (or fp16) into DeepSpeed's
      config from the accelerate config, and transformers requires `--bf16` to match; it is set here.
    """
    import torch

    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    accelerator = torch.accelerator.is_available()
    if not deepspeed:
        return {}
    if precision in ("bf16", "fp16") and not accelerator:
        raise InputError(
            f"DeepSpeed on a machine without GPU trains in fp32: launch with --mixed_precision no "
            f"(the accelerate config asks for {precision})"
        )
    if precision in ("bf16", "fp16"):
        return {precision: True}
    return {} if accelerator else {"ddp_backend": "gloo"}


_LAUNCH_CHANGES: list[str] = []


def adapt_to_launch() -> list[str]:
    """Adapt this process to how it was launched; `recipe_main` calls it as a run starts, before the arguments
    are parsed (TrainingArguments sets up the device when it is built), and `start_run` logs what it changed.
    Returns those changes, one line each; a second call changes nothing.

    - Several processes on a machine without GPUs: real CPU data parallelism over gloo. accelerate only picks
      its MULTI_CPU mode when told the run is on CPU (`ACCELERATE_USE_CPU=true`); with a GPU config such as
      multi_gpu.yaml every process would otherwise train alone. Under an FSDP config, accelerate's FSDP is
      switched on for CPU too (see `_allow_fsdp_on_cpu`).

    A script of yours that parses hfopt's arguments under `accelerate launch` calls it first, as recipes do.
    """
    changes = []
    for change, apply in _pending_launch():
        apply()
        changes.append(change)
    _LAUNCH_CHANGES.extend(changes)
    return changes


def pending_launch_changes() -> list[str]:
    """What `adapt_to_launch` would change in this process (nothing when it has run, or the launch needs
    nothing); reads only. `parse_args` refuses to parse while something is pending: every process of a
    multi-process CPU launch would otherwise train alone."""
    return [change for change, _ in _pending_launch()]


def _use_cpu() -> None:
    os.environ["ACCELERATE_USE_CPU"] = "true"


def _pending_launch() -> list[tuple[str, Callable[[], object]]]:
    """(what, how) of each change this launch still needs."""
    import torch

    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if deepspeed or int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.accelerator.is_available():
        return []
    pending = []
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() != "true":
        pending.append(
            ("several processes without a GPU: CPU data parallelism over gloo (ACCELERATE_USE_CPU=true)", _use_cpu)
        )
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not _fsdp_on_cpu_allowed():
        pending.append(
            (
                "FSDP on CPU: accelerate's AcceleratorState made to keep the FSDP plugin (see hfopt.hardware)",
                _allow_fsdp_on_cpu,
            )
        )
    return pending


def launch_changes() -> list[str]:
    """What `adapt_to_launch` changed in this process (for the log)."""
    return list(_LAUNCH_CHANGES)


def _allow_fsdp_on_cpu() -> bool:
    """Let an FSDP launch on a CPU-only machine really shard the model over gloo.

    accelerate 1.x switches FSDP on only for accelerator devices: `AcceleratorState.__init__` promotes
    MULTI_GPU, MULTI_XPU, ... to FSDP but leaves MULTI_CPU alone, so an FSDP config on CPU silently trained
    plain DDP. PyTorch's FSDP2 (`fully_shard`) itself works on CPU over gloo; this wraps AcceleratorState's
    constructor so that a CPU run with an FSDP plugin becomes FSDP. It changes nothing on machines with GPUs
    (tests/test_launch_configs.py pins accelerate's behaviour so a release that does it natively is noticed).
    """
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    if _fsdp_on_cpu_allowed():
        return False
    original_init = AcceleratorState.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)  # copies PartialState's MULTI_CPU back in on every call
        plugin = getattr(self, "fsdp_plugin", None) or kwargs.get("fsdp_plugin")
        if self.distributed_type == DistributedType.MULTI_CPU and plugin is not None:
            if getattr(self, "fsdp_plugin", None) is None and self._mixed_precision != "no":
                plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = plugin
            self.distributed_type = DistributedType.FSDP

    __init__.hfopt_cpu_fsdp = True
    AcceleratorState.__init__ = __init__
    return True


def _fsdp_on_cpu_allowed() -> bool:
    from accelerate.state import AcceleratorState

    return getattr(AcceleratorState.__init__, "hfopt_cpu_fsdp", False)


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


def suggest_cpu_bf16(training_args) -> str | None:
    """On a CPU with native bf16 (AVX512-BF16 or AMX), training in fp32 leaves about 2× on the table
    (bench/cpu_bf16.py): log how to switch, once, on the main process. Returns the message (None: no advice)."""
    import torch

    if torch.cuda.is_available() or mixed_precision(training_args) != "no":
        return None
    if os.environ.get("ACCELERATE_MIXED_PRECISION", "no") != "no" or not cpu_info()["bf16"]:
        return None
    message = (
        "This CPU computes bf16 natively (AVX512-BF16/AMX): bf16 autocast trains about 2× faster at the same "
        "accuracy (bench/cpu_bf16.py); launch with --config_file accelerate_configs/cpu_bf16.yaml"
    )
    if getattr(training_args, "process_index", 0) == 0:
        logger.info(message)
    return message


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
