"""hfopt.hardware: threads per process (the one-thread launcher default replaced, a user's choice kept), the
CPU's instruction sets, and the precision a run really uses."""

import dataclasses
import os
from types import SimpleNamespace

import pytest
import torch

from hfopt.errors import InputError
from hfopt.hardware import check_precision, configure_cpu_threads, cpu_info, mixed_precision, physical_cores


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_without_a_thread_setting_every_physical_core_is_used(monkeypatch, restore_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # recorded: teardown unsets what configure_cpu_threads sets
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    threads, reason = configure_cpu_threads()
    assert threads == torch.get_num_threads() == physical_cores() and "physical cores" in reason


def test_local_processes_share_the_cores(monkeypatch, restore_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert configure_cpu_threads()[0] == max(1, physical_cores() // 2)


def test_a_thread_count_the_user_set_is_kept(monkeypatch, restore_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # pytest is no launcher: the value is the user's
    threads, reason = configure_cpu_threads()
    assert threads == torch.get_num_threads() == 1 and reason == "OMP_NUM_THREADS set by you"


def test_cpu_info_names_the_int8_and_bf16_instruction_sets():
    info = cpu_info()
    assert {"model", "physical_cores", "avx512_vnni", "avx512_bf16", "amx", "bf16"} <= set(info)
    assert info["physical_cores"] >= 1


def test_fp16_without_cuda_is_an_error_and_precision_is_read_from_flags_or_config(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert mixed_precision(SimpleNamespace(fp16=False, bf16=False, mixed_precision="bf16")) == "bf16"
    assert mixed_precision(SimpleNamespace(fp16=False, bf16=False, mixed_precision="no")) == "no"
    with pytest.raises(InputError, match="fp16 mixed precision needs a CUDA GPU"):
        check_precision(SimpleNamespace(fp16=True, bf16=False, mixed_precision="no"))


def test_fp32_training_on_a_cpu_with_native_bf16_is_told_about_cpu_bf16(monkeypatch):
    import hfopt.hardware as hardware

    fp32 = SimpleNamespace(fp16=False, bf16=False, mixed_precision="no", process_index=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(hardware, "cpu_info", lambda: {"bf16": True})
    assert "accelerate_configs/cpu_bf16.yaml" in hardware.suggest_cpu_bf16(fp32)
    assert hardware.suggest_cpu_bf16(SimpleNamespace(fp16=False, bf16=True, process_index=0)) is None
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # launched with cpu_bf16.yaml
    assert hardware.suggest_cpu_bf16(fp32) is None
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    monkeypatch.setattr(hardware, "cpu_info", lambda: {"bf16": False})  # no native bf16: emulated, no advice
    assert hardware.suggest_cpu_bf16(fp32) is None


def test_parsing_changes_nothing_and_the_launch_adaptation_is_explicit_and_reported(monkeypatch):
    """Under a 2-process CPU launch, parsing leaves the environment alone and refuses until the process is
    adapted; `adapt_to_launch` (called by recipe_main) switches accelerate to CPU data parallelism once, and says
    so."""
    from hfopt import hardware
    from hfopt.args import ModelArguments, parse_args

    if torch.accelerator.is_available():
        pytest.skip("on a machine with a GPU the launch needs no adaptation")
    monkeypatch.setenv("WORLD_SIZE", "2")
    # setenv, not delenv: monkeypatch restores nothing for a variable that was absent, and adapt_to_launch sets
    # this one, which would then leak into every later test's subprocesses (DeepSpeed drops out under it)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "false")
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    monkeypatch.setattr(hardware, "_LAUNCH_CHANGES", [])

    def accelerate_environment():
        return {k: v for k, v in os.environ.items() if k.startswith("ACCELERATE")}

    before = accelerate_environment()

    @dataclasses.dataclass
    class Output:  # TrainingArguments would start a 2-process group
        output_dir: str = dataclasses.field(default="out", metadata={"help": "Where the run writes."})

    with pytest.raises(InputError, match=r"one of 2 launched without a GPU .* call hfopt.hardware.adapt_to_launch"):
        parse_args([ModelArguments, Output], "r", [])  # a script of its own that forgot: loud, not alone
    assert accelerate_environment() == before
    assert hardware.launch_changes() == []
    changes = hardware.adapt_to_launch()
    assert os.environ["ACCELERATE_USE_CPU"] == "true" and "CPU data parallelism over gloo" in changes[0]
    assert hardware.adapt_to_launch() == [] and hardware.launch_changes() == changes
    parse_args([ModelArguments, Output], "r", [])  # adapted: parses
