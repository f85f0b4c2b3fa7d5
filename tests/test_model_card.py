"""Model cards (hfopt.run.model_card): the README.md a recipe run leaves in its model folder parses with
huggingface_hub's ModelCard and holds the run's eval results as its model-index; `--push_to_hub` uploads that card
(Trainer's upload call intercepted, no network); the card of a compressed folder lists its stages."""

import json
import os
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

from hfopt.run.model_card import (
    check_model_card,
    compression_model_card,
    describe_base_model,
    run_model_card,
    strategies_used,
    write_missing_model_card,
    write_model_card,
)
from tests.testing_utils import ROOT, read_json, run_recipe, tiny_bert_args


def metric(card: ModelCard, metric_type: str, split: str = "validation") -> float:
    values = [
        r.metric_value
        for r in card.data.eval_results or []
        if r.metric_type == metric_type and r.dataset_split in (split, None)
    ]
    assert len(values) == 1, card.data.eval_results
    return values[0]


@pytest.mark.slow
def test_a_recipe_run_leaves_a_card_with_its_eval_results(tiny_teacher):
    """tiny_teacher: finetune_bert on the keyword task (the session fixture, no extra training)."""
    path = tiny_teacher / "README.md"
    results = read_json(tiny_teacher / "all_results.json")
    card = check_model_card(path)  # parses strictly; model-index round-trips; library_name, pipeline_tag, tags
    assert ModelCard.load(path).data.to_dict() == card.data.to_dict()
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert data.tags[:2] == ["hfopt", "text-classification"] and "dynamic-batching" in data.tags  # batching=length
    assert metric(card, "accuracy") == pytest.approx(results["eval_accuracy"])
    assert metric(card, "matthews_correlation") == pytest.approx(results["eval_mcc"])
    assert not any(r.metric_type.startswith(("runtime", "samples")) for r in data.eval_results)
    assert data.get("datasets") is None  # local CSV files are no Hub dataset
    model_index = data.to_dict()["model-index"]
    assert eval_results_to_model_index(*model_index_to_eval_results(model_index)) == model_index
    text = card.text
    for part in ("## Results", "## Training", "## Machine and library versions", "## How to use"):
        assert part in text
    assert "AutoModelForSequenceClassification.from_pretrained(" in text and "| transformers |" in text
    assert "| learning_rate | 0.0020 |" in text and "| global batch size | 16 |" in text


# A sitecustomize for the recipe subprocess: HfApi's create_repo and upload_folder (the only calls that would reach
# the network) record what they were given, and the README.md the upload would carry, in HFOPT_TEST_UPLOADS.
_INTERCEPT_UPLOADS = """
import json
import os
import types
from pathlib import Path

import huggingface_hub

_log = os.environ["HFOPT_TEST_UPLOADS"]


def _record(entry):
    with open(_log, "a") as fh:
        fh.write(json.dumps(entry) + "\\n")


def create_repo(self, repo_id, **kwargs):
    _record({"call": "create_repo", "repo_id": repo_id})
    return types.SimpleNamespace(repo_id=repo_id if "/" in repo_id else "me/" + repo_id)


def upload_folder(self, *, repo_id, folder_path, **kwargs):
    folder = Path(folder_path)
    readme = folder / "README.md"
    _record(
        {
            "call": "upload_folder",
            "repo_id": repo_id,
            "files": sorted(p.name for p in folder.iterdir()),
            "readme": readme.read_text() if readme.is_file() else None,
        }
    )
    return None


huggingface_hub.HfApi.create_repo = create_repo
huggingface_hub.HfApi.upload_folder = upload_folder
"""


@pytest.mark.slow
def test_push_to_hub_uploads_our_card_with_the_model(tiny_bert, easy_task, tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_INTERCEPT_UPLOADS)
    uploads = tmp_path / "uploads.jsonl"
    out = tmp_path / "out"
    args = tiny_bert_args(tiny_bert, easy_task, out, "--num_train_epochs", "1", "--save_strategy", "no")
    env = {
        "HFOPT_TEST_UPLOADS": str(uploads),
        "PYTHONPATH": os.pathsep.join([str(hooks), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    run_recipe("finetune_bert", [*args, "--push_to_hub", "true", "--hub_model_id", "me/tiny-card"], env=env)
    calls = [json.loads(line) for line in uploads.read_text().splitlines()]
    assert [c["call"] for c in calls] == ["create_repo", "upload_folder"]  # one push, at the end of the run
    upload = calls[-1]
    assert upload["repo_id"] == "me/tiny-card"
    assert {"model.safetensors", "config.json", "all_results.json", "README.md"} <= set(upload["files"])
    assert upload["readme"] == (out / "README.md").read_text()  # our card, not Trainer's draft
    card = check_model_card(out / "README.md")
    assert "hfopt" in card.data.tags and "generated_from_trainer" not in card.data.tags
    assert metric(card, "accuracy") == pytest.approx(read_json(out / "all_results.json")["eval_accuracy"])
    assert 'from_pretrained("me/tiny-card")' in card.text


REPORT = {
    "task": "classification",
    "metric": "accuracy",
    "higher_is_better": True,
    "metrics": ["accuracy", "f1"],
    "latency": "forward pass",
    "eval_examples": 100,
    "cpu": {"model": "Some CPU", "physical_cores": 2},
    "latency_reliable": True,
    "chain": ["prune_heads=0.25", "quantize=dynamic_int8"],
    "stages": {
        name: {
            "parameters": 21442 - 2096 * (name != "original"),
            "nonzero_parameters": nonzero,
            "size_bytes": size,
            "accuracy": accuracy,
            "f1": accuracy,
            "delta_accuracy": accuracy - 0.92,
            "delta_f1": accuracy - 0.92,
            "latency_b1_p50_ms": b1,
            "latency_b16_p50_ms": 2 * b1,
            "threads": 2,
            "size_reduction": 91080 / size,
            "speedup_b1": 1.7 / b1,
            "speedup_b16": 1.7 / b1,
            "latency_unstable": [],
        }
        for name, nonzero, size, accuracy, b1 in (
            ("original", 21410, 91080, 0.92, 1.7),
            ("prune_heads_0.25", 19314, 82736, 0.91, 1.45),
            ("quantize_dynamic_int8", 19314, 41600, 0.90, 1.2),
            ("onnx_int8", 19314, 39000, 0.90, 0.8),
        )
    },
    "onnx": {"exported_from": "prune_heads_0.25", "stages": {"onnx_int8": {"opset": 20}}},
}


def test_the_card_of_a_compressed_folder_lists_its_stages(tmp_path):
    card = compression_model_card(REPORT, "org/tiny-bert-sst2", "classification", location="out", dataset="dev.csv")
    check_model_card(write_model_card(card, tmp_path))
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.base_model == "org/tiny-bert-sst2" and data.get("base_model_relation") == "quantized"
    assert data.pipeline_tag == "text-classification" and data.library_name == "transformers"
    assert {"hfopt", "compressed", "head-pruning", "quantization", "onnx"} <= set(data.tags)
    assert data.get("datasets") is None  # a local file
    # the model-index: the saved model (the last PyTorch stage), not the ONNX one
    assert {(r.metric_type, r.metric_value) for r in data.eval_results} == {("accuracy", 0.90), ("f1", 0.90)}
    assert all("quantize_dynamic_int8" in r.metric_name for r in data.eval_results)
    rows = [line for line in card.text.splitlines() if line.startswith("| `")]
    assert [row.split("|")[1].strip() for row in rows] == [f"`{name}`" for name in REPORT["stages"]]
    assert "| `quantize_dynamic_int8` | 0.9000 | 0.9000 | -0.0200 | 19,346 | 19,314 | 0.04 | 2.19 |" in card.text
    assert 'load_compressed("out/model")' in card.text and 'load_onnx("out/onnx/onnx_int8")' in card.text


def test_a_compressed_local_model_records_no_base_model_it_does_not_know(tmp_path):
    folder = tmp_path / "my_model"
    folder.mkdir()
    card = compression_model_card(REPORT, str(folder), "seq2seq")
    assert card.data.base_model is None and card.data.get("base_model_relation") is None
    assert card.data.pipeline_tag == "translation" and "`my_model`" in card.text


def test_base_model_of_hub_ids_and_local_folders(tmp_path):
    assert describe_base_model("bert-base-uncased")[0] == "bert-base-uncased"
    assert describe_base_model(None) == (None, "")
    hub_cache = tmp_path / "models--org--tiny" / "snapshots" / "abc123"
    hub_cache.mkdir(parents=True)
    assert describe_base_model(str(hub_cache))[0] == "org/tiny"
    run = tmp_path / "teacher"  # an hfopt run's output: what its run_info.json says it was trained from
    run.mkdir()
    (run / "run_info.json").write_text(json.dumps({"config": {"model_name_or_path": "org/base"}}))
    origin, label = describe_base_model(str(run))
    assert origin == "org/base" and "`teacher`" in label and "org/base" in label
    plain = tmp_path / "plain"
    plain.mkdir()
    assert describe_base_model(str(plain))[0] is None


def test_strategies_are_named_from_the_configuration():
    config = {
        "early_stopping_patience": 3,
        "num_frozen_layers": 0,
        "batching": "samples",
        "use_peft": False,
        "lora_r": 8,
        "qat": "int8",
        "bf16": True,
        "l1_lambda": 0.0,
    }
    assert strategies_used(config) == {
        "early-stopping": {"early_stopping_patience": 3},
        "quantization-aware-training": {"qat": "int8"},
        "bf16": {"bf16": True},
    }
    assert "lora" in strategies_used({"use_peft": True, "lora_r": 8})
    assert list(strategies_used({"teacher_model_name_or_path": "t"}, "distill_bert")) == ["distillation"]


def test_translation_and_language_model_cards_from_plain_dicts(tmp_path):
    config = {
        "model_name_or_path": "org/t5-tiny",
        "dataset_name": "wmt/wmt16",
        "dataset_config_name": "de-en",
        "source_lang": "en",
        "target_lang": "de",
        "learning_rate": 1e-3,
    }
    results = {"eval_bleu": 12.5, "eval_loss": 2.0, "eval_runtime": 1.0, "eval_before_bleu": 1.0}
    card = run_model_card(results, config, "finetune_translation", model_id="me/t5")
    check_model_card(write_model_card(card, tmp_path))
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.pipeline_tag == "translation" and data.language == ["en", "de"]
    assert data.base_model == "org/t5-tiny" and data.datasets == ["wmt/wmt16"]
    assert {r.metric_type for r in data.eval_results} == {"bleu", "loss"}  # no runtime, no before-training
    assert {(r.dataset_type, r.dataset_config) for r in data.eval_results} == {("wmt/wmt16", "de-en")}
    assert "AutoModelForSeq2SeqLM" in card.text

    lm = run_model_card({"eval_perplexity": 20.0}, {"model_type": "gpt2", "train_file": "t.txt"}, "finetune_gpt")
    assert lm.data.pipeline_tag == "text-generation" and lm.data.base_model is None
    assert lm.data.eval_results is None  # no validation file: the held-out split is not named
    assert "from scratch" in lm.text and "AutoModelForCausalLM" in lm.text


def test_check_model_card_refuses_a_card_the_hub_would_not_read(tmp_path):
    bad = tmp_path / "README.md"
    bad.write_text("---\nlibrary_name: transformers\nmodel-index:\n- name: x\n  results:\n  - task: {}\n---\n# x\n")
    with pytest.raises(ValueError):
        check_model_card(bad)
    bad.write_text(
        "---\nlibrary_name: transformers\npipeline_tag: text-classification\ntags: [hfopt]\n"
        "base_model: /tmp/somewhere\n---\n# x\n"
    )
    with pytest.raises(ValueError, match="base_model"):
        check_model_card(bad)
    Path(bad).unlink()


def test_a_finished_folder_without_a_card_gets_one_from_its_record(tmp_path):
    """A run an older hfopt finished: its card made again from its record."""
    config = {"model_name_or_path": "org/tiny-bert", "validation_file": "dev.csv", "learning_rate": 1e-3}
    info = {"config": config, "command": ["finetune_bert.py", "--config", "c.yaml"], "versions": {"torch": "2"}}
    (tmp_path / "run_info.json").write_text(json.dumps(info))
    (tmp_path / "all_results.json").write_text(json.dumps({"eval_accuracy": 0.875, "eval_runtime": 1.0}))
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    assert write_missing_model_card(tmp_path) is None  # no model in the folder: nothing to describe
    (tmp_path / "model.safetensors").write_bytes(b"")
    card = check_model_card(write_missing_model_card(tmp_path))
    assert card.data.base_model == "org/tiny-bert" and card.data.pipeline_tag == "text-classification"
    assert metric(card, "accuracy") == 0.875 and "`finetune_bert` recipe" in card.text
    assert write_missing_model_card(tmp_path) is None  # never over a card already there
