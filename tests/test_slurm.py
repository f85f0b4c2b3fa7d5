"""Studies on Slurm (executor: slurm) on a real single-node cluster (tests/slurm_cluster.py): a task Slurm kills
is reported as killed and the rerun resumes it from its checkpoint; mistakes are one line before any job is
submitted. The equality of a Slurm study with the local one is in tests/test_study.py (four runs of the local
six-run study)."""

import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from hfopt.errors import InputError
from hfopt.study import load_study
from tests.testing_utils import (
    ROOT,
    compare_here,
    one_error_line,
    read_json,
    recipe_env,
    require_optuna,
    run_hfopt,
    write_study,
)

pytestmark = pytest.mark.slow


def _study(folder, tiny_bert, easy_task, args=None, **extra):
    """One run (baseline, seed 1) of the tiny study, on Slurm; `args` change the study's recipe arguments."""
    path = write_study(folder, tiny_bert, easy_task, [{"name": "baseline"}], seeds=(1,), executor="slurm", **extra)
    if args:
        data = yaml.safe_load(path.read_text())
        data["args"].update(args)
        path.write_text(yaml.safe_dump(data))
    return path


def _submit_then_kill(study, out) -> str:
    """Start `hfopt compare` on `study`, kill it once its run is queued on Slurm; the run's job id."""
    command = [sys.executable, "-m", "hfopt.cli", "compare", str(study), "--output_dir", str(out), "--no_progress"]
    submitter = subprocess.Popen(command, cwd=ROOT, env=recipe_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    record_path = out / "records" / "baseline--seed-1.json"
    deadline = time.time() + 120
    while not (record_path.is_file() and read_json(record_path)["status"] == "submitted") and time.time() < deadline:
        assert submitter.poll() is None, submitter.communicate()[1].decode()[-3000:]
        time.sleep(0.2)
    submitter.kill()
    submitter.wait()
    return read_json(record_path)["job"]


def test_a_run_slurm_cancels_is_reported_killed_and_the_rerun_resumes_it(slurm_cluster, tiny_bert, easy_task, tmp_path):
    args = dict(num_train_epochs=30, save_strategy="steps", save_steps=25)  # 750 steps: time to cancel
    study = _study(tmp_path, tiny_bert, easy_task, args, slurm={"time_min": 30})
    out = tmp_path / "out"
    run_dir = out / "runs" / "baseline" / "seed-1"
    command = [sys.executable, "-m", "hfopt.cli", "compare", str(study), "--output_dir", str(out), "--no_progress"]
    submitter = subprocess.Popen(command, cwd=ROOT, env=recipe_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while not list(run_dir.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline:
            assert submitter.poll() is None, submitter.communicate()[1].decode()[-3000:]
            time.sleep(0.5)
        record = read_json(out / "records" / "baseline--seed-1.json")
        assert record["status"] == "submitted" and record["job"]
        subprocess.run(["scancel", record["job"]], check=True)
        _, stderr = submitter.communicate(timeout=300)
    finally:
        if submitter.poll() is None:
            submitter.kill()
    assert submitter.returncode == 1, stderr.decode()[-3000:]
    assert "runs failed: baseline/seed-1 (killed)" in stderr.decode()
    record = read_json(out / "records" / "baseline--seed-1.json")
    assert record["status"] == "killed" and record["attempts"][-1]["slurm_state"].startswith("CANCELLED")
    assert "killed by Slurm (CANCELLED" in record["error"] and "rerun the study to resume" in record["error"]
    assert "killed by Slurm" in (out / "study.md").read_text()
    steps_done = max(int(p.parent.name.split("-")[1]) for p in run_dir.glob("checkpoint-*/trainer_state.json"))

    rerun = run_hfopt("compare", study, "--output_dir", out, "--no_progress", timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = read_json(out / "records" / "baseline--seed-1.json")
    assert record["status"] == "complete" and len(record["attempts"]) == 2
    assert record["attempts"][0]["slurm_job_id"] != record["attempts"][1]["slurm_job_id"]
    log = (out / "logs" / "baseline--seed-1.log").read_text()
    assert f"Resuming from {run_dir / f'checkpoint-{steps_done}'} (step {steps_done})" in log
    state = read_json(run_dir / "trainer_state.json")
    assert state["global_step"] == 750


def test_slurm_without_its_commands_is_one_line_naming_the_command_and_the_local_way(tiny_bert, easy_task, tmp_path):
    study = _study(tmp_path, tiny_bert, easy_task)
    bare = os.path.dirname(sys.executable)  # python, but no sbatch
    result = run_hfopt("compare", study, "--output_dir", tmp_path / "out", env={"PATH": bare})
    assert result.returncode == 2
    line = one_error_line(result)
    assert "executor: slurm needs Slurm's sbatch command on PATH" in line and "executor: local" in line
    assert not (tmp_path / "out" / "slurm").exists()


@pytest.mark.parametrize(
    "slurm, expected",
    [
        ({"partitoin": "gpu"}, "unknown Slurm setting 'partitoin' (did you mean 'partition'?)"),
        ({"slurm_array_parallelism": 0}, "slurm slurm_array_parallelism takes a whole number ≥ 1, got 0"),
        ({"sbatch": "--qos=high"}, "slurm sbatch takes a mapping of sbatch options"),
    ],
)
def test_a_wrong_slurm_setting_is_one_line(tiny_bert, easy_task, tmp_path, slurm, expected):
    with pytest.raises(InputError, match=re.escape(expected)):
        load_study(_study(tmp_path, tiny_bert, easy_task, slurm=slurm), check_flags=False)


def test_an_sbatch_option_this_sbatch_does_not_know_is_one_line_before_submitting(
    slurm_cluster, tiny_bert, easy_task, tmp_path
):
    study = _study(tmp_path, tiny_bert, easy_task, slurm={"sbatch": {"acount": "me"}})
    result = run_hfopt("compare", study, "--output_dir", tmp_path / "out")
    assert result.returncode == 2
    assert "slurm sbatch: 'acount' is not an option of this cluster's sbatch (did you mean 'account'?)" in (
        one_error_line(result)
    )
    assert not (tmp_path / "out" / "slurm").exists()


@require_optuna
def test_two_array_workers_on_one_journal_storage_run_exactly_the_requested_trials(
    slurm_cluster, tiny_bert, easy_task, tmp_path
):
    """A search of 5 trials shared by two Slurm array tasks (the study's two seeds, running at once): the journal
    holds 5 trials, numbers 0-4, each run once by one of the workers."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal = tmp_path / "search.log"
    study = _study(tmp_path, tiny_bert, easy_task, slurm={"slurm_array_parallelism": 2, "time_min": 30})
    data = yaml.safe_load(study.read_text())
    data["args"].update(num_train_epochs=1, hp_search_trials=5, hp_search_storage=str(journal))
    data.update(seeds=[1, 2], variants=[{"name": "search"}], measure_latency=False)
    study.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    result = run_hfopt("compare", study, "--output_dir", out, "--no_progress", timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]

    trials = optuna.load_study(study_name="hfopt", storage=JournalStorage(JournalFileBackend(str(journal)))).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    ran = []
    for seed in (1, 2):
        log = (out / "logs" / f"search--seed-{seed}.log").read_text()
        assert re.search(r"launch --main_process_port \d+ ", log)  # a port free on the node when the task began
        found = re.search(r"This worker ran (\d) of the 5 trials", log)
        assert found, log[-2000:]
        ran.append(int(found.group(1)))
        assert read_json(out / "runs" / "search" / f"seed-{seed}" / "best_trial.json")["trials"] == 5
    assert sum(ran) == 5  # each trial run by one worker


def test_a_rerun_after_the_submitting_side_died_reattaches_to_the_running_task(
    slurm_cluster, tiny_bert, easy_task, tmp_path
):
    """The submitting `hfopt compare` killed while its run trains on Slurm: the task goes on, and the rerun
    waits for that same task (no second submission) and records its result."""
    study = _study(tmp_path, tiny_bert, easy_task, dict(num_train_epochs=12), slurm={"time_min": 30})
    out = tmp_path / "out"
    record_path = out / "records" / "baseline--seed-1.json"
    job = _submit_then_kill(study, out)
    assert subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()

    rerun = run_hfopt("compare", study, "--output_dir", out, "--no_progress", timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = read_json(record_path)
    assert record["status"] == "complete" and [a["slurm_job_id"] for a in record["attempts"]] == [job]
    assert len(list((out / "slurm").glob("*_submission.sh"))) == 1


def test_a_task_that_ended_while_no_one_waited_is_recorded_on_the_rerun(
    slurm_cluster, tiny_bert, easy_task, tmp_path, capsys
):
    """The submitting side dies, the task finishes alone: --report already counts the run as complete, and the
    rerun records the task's attempt (its job id, host, state) without submitting it again."""
    study = _study(
        tmp_path, tiny_bert, easy_task, dict(num_train_epochs=1), slurm={"time_min": 30}, measure_latency=False
    )
    out = tmp_path / "out"
    record_path = out / "records" / "baseline--seed-1.json"
    job = _submit_then_kill(study, out)
    deadline = time.time() + 300
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline
        time.sleep(0.5)
    report = compare_here(capsys, "--report", out)
    assert report.returncode == 0 and "not run" not in report.stdout, report.stdout[-2000:]

    rerun = run_hfopt("compare", study, "--output_dir", out, "--no_progress", timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = read_json(record_path)
    assert record["status"] == "complete" and record["job"] is None
    attempts = [(a["slurm_job_id"], a["slurm_state"], a["exit_code"]) for a in record["attempts"]]
    assert attempts == [(job, "COMPLETED", 0)]
    assert len(list((out / "slurm").glob("*_submission.sh"))) == 1


@require_optuna
def test_a_search_storage_that_cannot_be_opened_is_one_line_before_any_run(tiny_bert, easy_task, tmp_path):
    study = _study(tmp_path, tiny_bert, easy_task)
    data = yaml.safe_load(study.read_text())
    data["args"].update(hp_search_trials=2, hp_search_storage="postgresql://127.0.0.1:1/searches")
    study.write_text(yaml.safe_dump(data))
    result = run_hfopt("compare", study, "--output_dir", tmp_path / "out")
    assert result.returncode == 2
    assert "hp_search_storage postgresql://127.0.0.1:1/searches cannot be opened: " in one_error_line(result)
    assert not (tmp_path / "out" / "runs").exists()
