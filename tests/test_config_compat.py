"""Users' configurations keep working: every bundled recipe YAML, study and pipeline file, and the config.yaml of
an old run, resolve to the configuration recorded in tests/data/resolved_configs.json before the argument
dataclasses were reorganised (keys, values and defaults alike).

After a deliberate change of a default, record again (and say so in CHANGELOG.md):

    python tests/test_config_compat.py --record
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "tests" / "data" / "resolved_configs.json"
OLD_RUN_CONFIG = ROOT / "tests" / "data" / "old_run_config.yaml"  # a finetune_bert run's config.yaml
# each bundled recipe YAML and the recipe it is written for (a new YAML must be added here)
RECIPE_YAMLS = {
    "bert_sst2.yaml": "finetune_bert",
    "minilm_local_files.yaml": "finetune_bert",
    "gpt2_wikitext.yaml": "finetune_gpt",
    "gpt_instruction_demo.yaml": "finetune_gpt",
    "opus_mt_en_de.yaml": "finetune_translation",
    "t5_small_en_de.yaml": "finetune_translation",
}
RECIPES = ("finetune_bert", "finetune_gpt", "finetune_translation", "distill_bert")
# values that depend on the machine or the installed extras, not on the configuration
MACHINE_KEYS = {"report_to", "output_dir"}


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"_compat_{name}", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _demo_model() -> str:
    from hfopt.models import demo_model_path

    return str(demo_model_path())


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)):  # enums
        return _plain(value.value)
    if isinstance(value, str):
        return value.replace(_demo_model(), "<demo-model>").replace(str(ROOT), "<repo>")
    if isinstance(value, float) and value != value:
        return "nan"
    return value


def _hfopt_fields(objects) -> dict:
    """Every field of the hfopt argument dataclasses, by name (however they are grouped into classes)."""
    values = {}
    for obj in objects:
        if type(obj).__module__.startswith("hfopt"):
            parts = getattr(obj, "parts", (obj,))
            for part in parts:
                values.update({f.name: getattr(part, f.name) for f in dataclasses.fields(part)})
    return values


def _recipe_case(recipe: str, argv: list[str]) -> dict:
    from hfopt.args import parse_args

    module = _recipe(recipe)
    defaults, demo = getattr(module, "DEFAULTS", None), getattr(module, "DEMO", None)
    *objects, config = parse_args(module.ARGUMENTS, module.RECIPE, argv, defaults=defaults, demo=demo)
    fields = _hfopt_fields(objects)
    resolved = {k: v for k, v in config.items() if k not in MACHINE_KEYS}
    return _plain({"config": resolved, "fields": fields})


def resolve_all(pipelines: bool = True) -> dict:
    from hfopt.commands.compress import parse as parse_compress
    from hfopt.study import load_study

    cases = {}
    for recipe in RECIPES:
        cases[f"recipe:{recipe}"] = _recipe_case(recipe, [])
    for name, recipe in sorted(RECIPE_YAMLS.items()):
        cases[f"yaml:{name}"] = _recipe_case(recipe, ["--config", str(ROOT / "recipes" / "configs" / name)])
    cases["old_run:config.yaml"] = _recipe_case("finetune_bert", ["--config", str(OLD_RUN_CONFIG)])
    for path in sorted((ROOT / "recipes" / "studies").glob("*.yaml")):
        study = load_study(path)
        cases[f"study:{path.name}"] = _plain(
            {v: {k: x for k, x in c.items() if k not in MACHINE_KEYS} for v, c in study.resolved.items()}
        )
    for path in sorted((ROOT / "recipes" / "pipelines").glob("*.yaml")) if pipelines else ():
        model_dir, output_dir, config = parse_compress(["--config", str(path)])
        cases[f"pipeline:{path.name}"] = _plain(config.to_dict())
    return cases


def test_every_bundled_yaml_is_listed():
    assert sorted(p.name for p in (ROOT / "recipes" / "configs").glob("*.yaml")) == sorted(RECIPE_YAMLS)


def test_bundled_configurations_resolve_as_recorded(monkeypatch):
    monkeypatch.chdir(ROOT)  # the pipeline file's paths are relative to the repository
    recorded = json.loads(RECORD.read_text())
    shared = (ROOT.parent / "shared" / "data").is_dir()  # the SST-2 pipeline checks its ../shared/data files
    if not shared:
        recorded = {k: v for k, v in recorded.items() if not k.startswith("pipeline:")}
    current = resolve_all(pipelines=shared)
    assert sorted(current) == sorted(recorded)
    for case, expected in recorded.items():
        assert _without_new_fields(current[case], expected) == expected, case


# Fields added since the record, each at its default in every bundled configuration (an old config cannot set them).
NEW_FIELDS = {"hp_search_storage": None, "hp_search_study_name": None, "hidden_loss_weight": 0.0, "stage_cache": None,
              "augment_deletion_prob": 0.0, "augment_swap_prob": 0.0, "augment_mask_prob": 0.0,
              "augment_stages": None}  # fmt: skip


def _without_new_fields(current, recorded):
    """`current` less the NEW_FIELDS that the record lacks (failing if one is not at its default)."""
    if not isinstance(current, dict) or not isinstance(recorded, dict):
        return current
    kept = {}
    for key, value in current.items():
        if key not in recorded and key in NEW_FIELDS:
            assert value == NEW_FIELDS[key], f"{key} = {value!r}: a new field away from its default"
            continue
        kept[key] = _without_new_fields(value, recorded.get(key))
    return kept


if __name__ == "__main__" and "--record" in sys.argv:
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    RECORD.parent.mkdir(exist_ok=True)
    RECORD.write_text(json.dumps(resolve_all(), indent=1, sort_keys=True) + "\n")
    print(f"recorded {RECORD}")
elif __name__ == "__main__":
    print(__doc__)
    print(yaml.safe_dump(sorted(json.loads(RECORD.read_text()))))
