"""Packaging as users meet it: a wheel built from the repository (not an editable install) holds the library
and nothing else, installs a working `hfopt` console script, resolves every extra, and a recipe copied out of the
repository into an empty folder runs against it."""

import json
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.testing_utils import ROOT, read_json, recipe_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(folder)],
        check=True,
        capture_output=True,
    )
    return next(folder.glob("hfopt-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    env = recipe_env()
    env["PYTHONPATH"] = str(target)  # the wheel's hfopt, not the repository's
    return target, env


def test_the_wheel_holds_the_library_its_license_and_no_recipes_or_tests(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "hfopt/__init__.py" in names and "hfopt/commands/compress.py" in names and "hfopt/data/files.py" in names
    assert not any(n.startswith(("recipes/", "tests/", "bench/")) for n in names)
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_the_console_script_of_the_wheel_runs(installed, tmp_path):
    target, env = installed
    where = subprocess.run(
        [sys.executable, "-c", "import hfopt; print(hfopt.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert where.stdout.strip().startswith(str(target))
    versions = subprocess.run(
        [str(target / "bin" / "hfopt"), "env"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert versions.returncode == 0 and json.loads(versions.stdout)["hfopt"]
    bad = subprocess.run(
        [str(target / "bin" / "hfopt"), "check-config", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_every_extra_resolves(wheel):
    metadata = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))
    lines = zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
    extras = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Provides-Extra:")]
    assert {"demo", "test"} <= set(extras)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "-q", f"{wheel}[{','.join(extras)}]", "torch==2.13.0"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_recipe_copied_into_an_empty_project_runs_against_the_wheel(installed, tiny_bert, easy_task, tmp_path):
    target, env = installed
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "recipes" / "finetune_bert.py", project / "train.py")
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--model_name_or_path",
            str(tiny_bert),
            "--train_file",
            str(easy_task["train"]),
            "--validation_file",
            str(easy_task["validation"]),
            "--output_dir",
            str(out),
            "--num_train_epochs",
            "4",
            "--learning_rate",
            "2e-3",
            "--save_strategy",
            "no",
            "--disable_tqdm",
            "true",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_json(out / "all_results.json")["eval_accuracy"] >= 0.9
    # without data it explains that the bundled demo data stayed in the repository
    demo = subprocess.run(
        [sys.executable, "train.py", "--model_name_or_path", str(tiny_bert), "--output_dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
    )
    assert demo.returncode == 2 and "sentiment/train.csv does not exist" in demo.stderr
