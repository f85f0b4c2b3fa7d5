"""Experiment tracking of a study: every run is launched with its name (`--run_name variant/seed-n`) and the study
as its group (trackio's `--project`, MLflow's experiment, W&B's run group) and its own TensorBoard folder, without a
training; the recipe's own parser takes those flags; and, where MLflow or trackio is installed, transformers'
integration logs the run offline under the study's name."""

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys

import pytest
import yaml

from hfopt.args import parse_args
from hfopt.study import load_study
from hfopt.study.runner import launch_command, tracking_env, tracking_flags
from tests.testing_utils import ROOT, easy_rows, recipe_env, write_csv

VARIANTS = [
    {"name": "baseline"},
    {"name": "named", "args": {"run_name": "my-own-name", "project": "my-project"}},
]


@pytest.fixture
def study(tmp_path):
    train = write_csv(tmp_path / "train.csv", easy_rows(20, seed=1))
    dev = write_csv(tmp_path / "dev.csv", easy_rows(10, seed=2))
    spec = {
        "name": "sentiment",
        "recipe": "finetune_bert",
        "args": {"model_name_or_path": "org/tiny-bert", "train_file": str(train), "validation_file": str(dev)},
        "seeds": [1, 2],
        "variants": VARIANTS,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_study(path)


def flag(command: list[str], name: str) -> str | None:
    values = [command[i + 1] for i, token in enumerate(command[:-1]) if token == f"--{name}"]
    return values[-1] if values else None


def test_each_run_is_named_and_grouped_by_its_study(study, tmp_path, monkeypatch):
    for key in ("MLFLOW_EXPERIMENT_NAME", "WANDB_RUN_GROUP", "MLFLOW_TAGS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_RUN_ID", "a-run-of-mine")  # would make every run resume this one run
    root = tmp_path / "out"
    runs = [run for run in study.runs(root) if run.variant == "baseline"]
    commands = {}
    for run in runs:
        command, env = launch_command(study, run, root)
        commands[run.name] = command
        assert command[: len(run.command(sys.executable))] == run.command(sys.executable)
        assert flag(command, "run_name") == f"baseline/seed-{run.seed}" and flag(command, "project") == "sentiment"
        assert env["TENSORBOARD_LOGGING_DIR"] == str(root / "tensorboard" / "baseline" / f"seed-{run.seed}")
        assert env["MLFLOW_EXPERIMENT_NAME"] == "sentiment" and env["WANDB_RUN_GROUP"] == "sentiment"
        tags = json.loads(env["MLFLOW_TAGS"])
        assert tags == {"hfopt.study": "sentiment", "hfopt.variant": "baseline", "hfopt.seed": str(run.seed)}
        assert "MLFLOW_RUN_ID" not in env
        assert env["PATH"] == os.environ["PATH"]  # the rest of the study's environment
    assert len(set(map(tuple, commands.values()))) == len(runs) == 2

    # the recipe's own parser takes them (as TrainingArguments.run_name and .project)
    recipe_args = commands["baseline/seed-1"][commands["baseline/seed-1"].index(str(study.recipe)) + 1 :]
    spec = importlib.util.spec_from_file_location("tracking_finetune_bert", study.recipe)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    *arguments, config = parse_args(recipe.ARGUMENTS, recipe.RECIPE, recipe_args, defaults=recipe.DEFAULTS)
    training_args = arguments[-1]
    assert training_args.run_name == "baseline/seed-1" and training_args.project == "sentiment"
    assert config["run_name"] == "baseline/seed-1"


def test_what_the_user_set_is_kept(study, tmp_path):
    root = tmp_path / "out"
    named = next(run for run in study.runs(root) if run.variant == "named")
    assert tracking_flags(study, named) == []  # the variant names its run and project itself
    env = tracking_env(
        study, named, root, {"MLFLOW_EXPERIMENT_NAME": "mine", "WANDB_RUN_GROUP": "g", "MLFLOW_TAGS": '{"team": "nlp"}'}
    )
    assert "MLFLOW_EXPERIMENT_NAME" not in env and "WANDB_RUN_GROUP" not in env and "MLFLOW_RUN_ID" not in env
    assert json.loads(env["MLFLOW_TAGS"]) == {
        "team": "nlp",
        "hfopt.study": "sentiment",
        "hfopt.variant": "named",
        "hfopt.seed": str(named.seed),
    }


# transformers' own callbacks, offline, with the environment and names a study gives a run (no training: setup
# and one log call). Skipped where the tracker is not installed.
_LOG_ONE_STEP = """
import sys
from transformers import TrainerControl, TrainerState, TrainingArguments
from transformers.integrations import {callback}

args = TrainingArguments(sys.argv[1], run_name=sys.argv[2], project=sys.argv[3], report_to=[])
state = TrainerState(is_world_process_zero=True, global_step=1)
callback = {callback}()
callback.on_train_begin(args, state, TrainerControl(), model=None)
callback.on_log(args, state, TrainerControl(), logs={{"loss": 0.5}}, model=None)
callback.on_train_end(args, state, TrainerControl(), model=None)
"""


def _log_one_step(callback: str, study, tmp_path, extra_env: dict) -> None:
    root = tmp_path / "out"
    run = study.runs(root)[0]
    command, env = launch_command(study, run, root)
    env = {**recipe_env(), **{k: v for k, v in env.items() if k.startswith(("MLFLOW_", "WANDB_"))}, **extra_env}
    code = _LOG_ONE_STEP.format(callback=callback)
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "o"), flag(command, "run_name"), flag(command, "project")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_mlflow_logs_the_run_offline_under_the_study(study, tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _log_one_step("MLflowCallback", study, tmp_path, {"MLFLOW_TRACKING_URI": store})
    mlflow.set_tracking_uri(store)
    experiment = mlflow.get_experiment_by_name("sentiment")
    assert experiment is not None
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    assert [r.info.run_name for r in runs] == ["baseline/seed-1"]
    assert runs[0].data.tags["hfopt.variant"] == "baseline" and runs[0].data.metrics["loss"] == 0.5


def test_trackio_logs_the_run_offline_in_the_study_project(study, tmp_path):
    pytest.importorskip("trackio", reason="trackio is not installed")
    _log_one_step("TrackioCallback", study, tmp_path, {"TRACKIO_DIR": str(tmp_path / "trackio")})
    database = tmp_path / "trackio" / "sentiment.db"  # one local database per project: the study's
    assert database.is_file(), sorted(p.name for p in (tmp_path / "trackio").rglob("*"))
    with sqlite3.connect(database) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        cells = {str(cell) for table in tables for row in db.execute(f'SELECT * FROM "{table}"') for cell in row}
    assert "baseline/seed-1" in cells
