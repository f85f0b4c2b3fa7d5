import json
import os
from types import SimpleNamespace

import pytest

from hfopt.run import checkpoint_to_resume, format_results_table, write_json_atomic


def make_checkpoint(root, step, complete=True):
    path = root / f"checkpoint-{step}"
    path.mkdir()
    (path / "model.safetensors").write_bytes(b"0")
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def args_for(path):
    return SimpleNamespace(output_dir=str(path), process_index=0)


def test_resume_picks_the_last_complete_checkpoint(tmp_path):
    make_checkpoint(tmp_path, 5)
    make_checkpoint(tmp_path, 10)
    make_checkpoint(tmp_path, 15, complete=False)  # killed while saving
    assert checkpoint_to_resume(args_for(tmp_path)) == str(tmp_path / "checkpoint-10")


def test_no_checkpoint_and_start_fresh(tmp_path):
    assert checkpoint_to_resume(args_for(tmp_path / "absent")) is None
    make_checkpoint(tmp_path, 5)
    assert checkpoint_to_resume(args_for(tmp_path), start_fresh=True) is None
    assert not (tmp_path / "checkpoint-5").exists()


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


def test_results_table_lists_every_metric():
    table = format_results_table({"eval_accuracy": 0.91234, "train_runtime": 12.5, "epoch": 3}, title="demo")
    lines = table.splitlines()
    assert "demo" in lines[1]
    assert any("eval_accuracy" in line and "0.9123" in line for line in lines)
    assert len({len(line) for line in lines}) == 1  # aligned
