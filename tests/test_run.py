"""hfopt.run: what a run may do with its output_dir (lock, resume only into the same configuration, checkpoints
that load), atomic writes and swaps, and the results table."""

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from hfopt.errors import InputError
from hfopt.run import (
    RunLock,
    checkpoint_problem,
    config_differences,
    folder_swap,
    format_results_table,
    plan_output_dir,
    save_config,
    write_json_atomic,
)
from tests.testing_utils import ROOT

CONFIG = {"learning_rate": 5e-5, "seed": 42, "train_file": "t.csv", "logging_steps": 10}


def make_checkpoint(root, step, complete=True):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.zeros(4, 4)}, str(path / "model.safetensors"))
    torch.save({"state": {}}, path / "optimizer.pt")
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def plan(output_dir, config=CONFIG, start_fresh=False):
    training_args = SimpleNamespace(output_dir=str(output_dir), process_index=0)
    return plan_output_dir(training_args, SimpleNamespace(start_fresh=start_fresh), config)


def recorded_run(output_dir, config=CONFIG, status="training", steps=(5, 10)):
    output_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, output_dir)
    (output_dir / "run_info.json").write_text(json.dumps({"status": status}))
    for step in steps:
        make_checkpoint(output_dir, step)
    return output_dir


def test_resume_picks_the_last_complete_checkpoint(tmp_path):
    recorded_run(tmp_path)
    make_checkpoint(tmp_path, 15, complete=False)  # killed while saving
    assert plan(tmp_path).checkpoint == str(tmp_path / "checkpoint-10")


def test_an_empty_or_new_folder_starts_at_step_zero(tmp_path):
    first = plan(tmp_path / "absent")
    assert first.checkpoint is None and not first.complete and first.fresh


@pytest.mark.parametrize("damage", ["truncated weights", "unreadable optimizer", "damaged trainer_state"])
def test_a_checkpoint_that_cannot_load_is_skipped_for_the_previous_good_one(tmp_path, damage, caplog):
    recorded_run(tmp_path)
    newest = tmp_path / "checkpoint-10"
    if damage == "truncated weights":
        data = (newest / "model.safetensors").read_bytes()
        (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "unreadable optimizer":
        (newest / "optimizer.pt").write_bytes(b"garbage")
    else:
        (newest / "trainer_state.json").write_text('{"global_step": 1')
    assert checkpoint_problem(newest) is not None
    assert plan(tmp_path).checkpoint == str(tmp_path / "checkpoint-5")
    assert "Skipping checkpoint" in caplog.text and "checkpoint-10" in caplog.text
    (tmp_path / "checkpoint-5" / "optimizer.pt").write_bytes(b"")
    with pytest.raises(InputError, match="holds no checkpoint that can be loaded .* --start_fresh true"):
        plan(tmp_path)


def test_a_rerun_with_other_settings_stops_naming_the_keys(tmp_path):
    recorded_run(tmp_path, status="complete")
    (tmp_path / "all_results.json").write_text("{}")
    before = sorted(os.listdir(tmp_path))
    changed = {**CONFIG, "learning_rate": 3e-4, "seed": 7, "logging_steps": 1}  # logging is safe to change
    with pytest.raises(InputError) as err:
        plan(tmp_path, changed)
    message = str(err.value)
    assert "learning_rate: 5e-05 → 0.0003" in message and "seed: 42 → 7" in message
    assert "logging_steps" not in message and "--start_fresh true" in message and "another --output_dir" in message
    assert sorted(os.listdir(tmp_path)) == before  # nothing touched


def test_a_finished_run_rerun_unchanged_is_complete(tmp_path):
    recorded_run(tmp_path, status="complete")
    (tmp_path / "all_results.json").write_text("{}")
    result = plan(tmp_path, {**CONFIG, "logging_steps": 50})
    assert result.complete and result.checkpoint is None


def test_a_model_without_a_record_is_never_overwritten(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights of someone else's run")
    with pytest.raises(InputError, match="holds a model but no config.yaml"):
        plan(tmp_path)
    fresh = plan(tmp_path, start_fresh=True)
    assert fresh.fresh and fresh.checkpoint is None


def test_start_fresh_replaces_only_once_training_starts(tmp_path):
    recorded_run(tmp_path, status="complete")
    result = plan(tmp_path, {**CONFIG, "seed": 1}, start_fresh=True)
    assert result.checkpoint is None
    assert {p.name for p in result.stale} >= {"checkpoint-5", "checkpoint-10", "config.yaml", "run_info.json"}
    assert (tmp_path / "checkpoint-5").exists()  # removed by RunRecordCallback after the first step


def test_config_differences_compare_missing_keys_with_defaults():
    from hfopt.args import RunArguments

    recorded = {"metric": None}
    assert config_differences(recorded, {"metric": None, "start_fresh": True}, [RunArguments()]) == []
    assert config_differences(recorded, {"metric": "x.py"}, [RunArguments()]) == ["metric: None → 'x.py'"]


def test_a_second_run_on_the_same_folder_stops_and_a_killed_run_leaves_no_stale_lock(tmp_path):
    RunLock.acquire(tmp_path)
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        from hfopt.run import RunLock
        try:
            RunLock.acquire({str(tmp_path)!r})
        except Exception as err:
            print(err); sys.exit(2)
        print("acquired")
    """)
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert other.returncode == 2 and "is in use by another run (pid" in other.stdout
    # a process that dies holding the lock releases it
    holder = subprocess.Popen(
        [sys.executable, "-c", script.replace('print("acquired")', "import time; time.sleep(60)")]
    )
    lock_dir = tmp_path / "second"
    lock_dir.mkdir()
    script2 = script.replace(str(tmp_path), str(lock_dir))
    holder.kill()
    holder.wait()
    killer = subprocess.Popen([sys.executable, "-c", script2.replace('print("acquired")', "import os; os._exit(0)")])
    killer.wait()
    again = subprocess.run([sys.executable, "-c", script2], capture_output=True, text=True)
    assert again.returncode == 0 and "acquired" in again.stdout


def test_atomic_write_leaves_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "all_results.json"
    write_json_atomic(path, {"eval_accuracy": 0.9})

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_json_atomic(path, {"eval_accuracy": Boom()})
    assert json.loads(path.read_text()) == {"eval_accuracy": 0.9}
    assert os.listdir(tmp_path) == ["all_results.json"]


def test_folder_swap_keeps_the_old_folder_when_writing_fails(tmp_path):
    target = tmp_path / "model"
    with folder_swap(target) as staging:
        (staging / "weights").write_text("good")
    with pytest.raises(OSError), folder_swap(target) as staging:
        (staging / "weights").write_text("half")
        raise OSError(28, "No space left on device")
    assert (target / "weights").read_text() == "good" and sorted(os.listdir(tmp_path)) == ["model"]


def test_results_table_lists_every_metric():
    table = format_results_table({"eval_accuracy": 0.91234, "train_runtime": 12.5, "epoch": 3}, title="demo")
    lines = table.splitlines()
    assert "demo" in lines[1]
    assert any("eval_accuracy" in line and "0.9123" in line for line in lines)
    assert len({len(line) for line in lines}) == 1  # aligned


def test_disk_usage_tells_the_model_from_the_checkpoints(tmp_path):
    from hfopt.args import RECIPE_DEFAULTS
    from hfopt.run import disk_usage
    from hfopt.run.record import format_disk_usage

    assert RECIPE_DEFAULTS["save_total_limit"] == 2  # at most two checkpoints by default
    (tmp_path / "model.safetensors").write_bytes(b"m" * 3000)
    for step in (10, 20):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "optimizer.pt").write_bytes(b"o" * 5000)
    usage = disk_usage(tmp_path)
    assert usage == dict(total=13000, model=3000, checkpoints=10000, num_checkpoints=2)
    line = format_disk_usage(tmp_path, usage)
    assert "2 checkpoint(s)" in line and "--keep_checkpoints false" in line
    assert "no checkpoints" in format_disk_usage(tmp_path, dict(usage, checkpoints=0, num_checkpoints=0))
