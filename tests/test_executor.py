"""hfopt.study.executor and the study's run order: N runs at once each get their own physical cores (pinned,
hyper-threads of a core together) or GPUs and their own rendezvous port, impossible shares are one line before
anything runs, and variants interleave across seeds."""

import os

import pytest
import yaml

from hfopt.errors import InputError
from hfopt.study import executor, load_study


def test_cpu_shares_split_the_physical_cores_without_overlap(monkeypatch):
    monkeypatch.setattr(executor, "_gpus", list)
    cores = executor.physical_core_groups()
    if len(cores) < 2:
        pytest.skip("needs 2 physical cores")
    one = executor.machine_shares(1)
    assert len(one) == 1 and one[0].environment() == {} and one[0].cpus == [] and one[0].port is None  # left alone
    two = executor.machine_shares(2)
    assert [s.slot for s in two] == [0, 1] and not set(two[0].cpus) & set(two[1].cpus)
    assert all(s.threads == len(cores) // 2 for s in two) and two[0].environment() == {}
    assert two[0].port != two[1].port and two[1].launch_args([]) == ["--main_process_port", str(two[1].port)]
    assert two[1].launch_args(["--main_process_port", "30000"]) == []  # the run's own port wins
    with pytest.raises(InputError, match=f"{len(cores) + 1} runs at once need at least {len(cores) + 1} physical"):
        executor.machine_shares(len(cores) + 1)
    with pytest.raises(InputError, match="gpus_per_run is 1 but this machine has no GPU"):
        executor.machine_shares(2, gpus_per_run=1)


def test_hyper_threads_of_a_core_stay_in_one_share(monkeypatch):
    """Linux numbers the second hyper-thread of core i as CPU i + cores: a share of adjacent CPU numbers would
    put two runs on the same cores."""
    topology = {cpu: ("0", str(cpu % 4)) for cpu in range(8)}  # 4 cores × 2 threads: core c = CPUs c and c + 4
    monkeypatch.setattr(executor.os, "sched_getaffinity", lambda pid: set(range(8)))
    real_read = executor.Path.read_text

    def read_text(path, *args, **kwargs):
        if path.parent.name == "topology" and path.parent.parent.name.startswith("cpu"):
            package, core = topology[int(path.parent.parent.name[3:])]
            return package if path.name == "physical_package_id" else core
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(executor.Path, "read_text", read_text)
    monkeypatch.setattr(executor, "_gpus", list)
    assert executor.physical_core_groups() == [[0, 4], [1, 5], [2, 6], [3, 7]]
    first, second = executor.machine_shares(2)
    assert (first.cpus, first.threads, second.cpus, second.threads) == ([0, 4, 1, 5], 2, [2, 6, 3, 7], 2)


def test_gpu_shares_give_each_run_its_own_gpus(monkeypatch):
    monkeypatch.setattr(executor, "_gpus", lambda: ["0", "1", "2", "3"])
    shares = executor.machine_shares(2)
    assert [s.environment() for s in shares] == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert shares[0].port != shares[1].port  # multi-GPU runs started together never race for one port
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
