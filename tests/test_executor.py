"""hfopt.study.executor and the study's run order: N runs at once each get their own cores (pinned, one thread
per core) or GPUs, impossible shares are one line before anything runs, and variants interleave across seeds."""

import os

import pytest
import yaml

from hfopt.errors import InputError
from hfopt.hardware import physical_cores
from hfopt.study import executor, load_study


def test_cpu_shares_split_the_cores_without_overlap(monkeypatch):
    monkeypatch.setattr(executor, "_gpus", list)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs")
    one = executor.machine_shares(1)
    assert len(one) == 1 and one[0].environment() == {} and one[0].cpus == []  # the run is left alone
    two = executor.machine_shares(2)
    assert [s.slot for s in two] == [0, 1] and not set(two[0].cpus) & set(two[1].cpus)
    assert all(s.threads == max(1, physical_cores() // 2) for s in two)
    assert two[1].environment() == {"OMP_NUM_THREADS": str(two[1].threads)}
    with pytest.raises(InputError, match=f"{len(cpus) + 1} runs at once need at least {len(cpus) + 1} CPUs"):
        executor.machine_shares(len(cpus) + 1)
    with pytest.raises(InputError, match="gpus_per_run is 1 but this machine has no GPU"):
        executor.machine_shares(2, gpus_per_run=1)


def test_gpu_shares_give_each_run_its_own_gpus(monkeypatch):
    monkeypatch.setattr(executor, "_gpus", lambda: ["0", "1", "2", "3"])
    shares = executor.machine_shares(2)
    assert [s.environment() for s in shares] == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert [s.gpus for s in executor.machine_shares(4, gpus_per_run=1)] == [["0"], ["1"], ["2"], ["3"]]
    with pytest.raises(InputError, match="3 runs at once with 2 GPU\\(s\\) each need 6 GPUs; this machine has 4"):
        executor.machine_shares(3, gpus_per_run=2)


def test_a_share_pins_a_process_to_its_cpus():
    import subprocess
    import sys

    cpus = sorted(os.sched_getaffinity(0))
    share = executor.Share(0, threads=1, cpus=cpus[:1])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        share.pin(child.pid)
        assert os.sched_getaffinity(child.pid) == set(cpus[:1])
    finally:
        child.kill()
        child.wait()


def _study(tmp_path, **extra):
    path = tmp_path / "study.yaml"
    spec = {
        "recipe": "finetune_bert",
        "seeds": [1, 2],
        "variants": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
        **extra,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def test_runs_interleave_variants_across_seeds(tmp_path):
    study = load_study(_study(tmp_path, parallel=2), check_flags=False)
    assert [r.name for r in study.runs()] == ["a/seed-1", "b/seed-1", "c/seed-1", "a/seed-2", "b/seed-2", "c/seed-2"]
    assert study.parallel == 2 and study.gpus_per_run is None


@pytest.mark.parametrize("key, value", [("parallel", 0), ("parallel", "two"), ("gpus_per_run", True)])
def test_a_bad_share_setting_in_the_study_is_one_line(tmp_path, key, value):
    with pytest.raises(InputError, match=f"{key} must be a whole number ≥ 1"):
        load_study(_study(tmp_path, **{key: value}), check_flags=False)
