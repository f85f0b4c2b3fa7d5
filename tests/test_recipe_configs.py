"""Every YAML in recipes/configs parses with its recipe's own argument dataclasses."""

import importlib.util

import pytest

from hfopt.args import parse_args
from tests.testing_utils import ROOT

CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
RECIPE_OF = {
    "bert_sst2": "finetune_bert",
    "minilm_local_files": "finetune_bert",
    "gpt2_wikitext": "finetune_gpt",
    "gpt_instruction_demo": "finetune_gpt",
    "opus_mt_en_de": "finetune_translation",
    "t5_small_en_de": "finetune_translation",
}


def load_recipe(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_recipe_config_parses(path):
    recipe = load_recipe(RECIPE_OF[path.stem])
    *_, training_args, _ = parse_args(
        recipe.ARGUMENTS, recipe.RECIPE, ["--config", str(path)], defaults=recipe.DEFAULTS
    )
    assert training_args.output_dir == f"outputs/{path.stem}"
