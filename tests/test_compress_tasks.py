"""Compression for every task, and compressed models going back into training: `hfopt compress` on a causal LM
(perplexity) and a translation model (BLEU), pruned folders fine-tuned and distilled through the recipes, and
gradual pruning switched on by recipe flags."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, GenerationConfig

from hfopt.architectures import TASK_HEAD_PATTERNS, linear_layers
from hfopt.models import load_trained_model
from tests.testing_utils import (
    TINY_GPT,
    TINY_MARIAN,
    one_error_line,
    read_json,
    run_hfopt,
    run_recipe,
    story_lines,
    tiny_bert_args,
    toy_pairs,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    """A tiny GPT-2 trained from scratch on the story task, and its text files."""
    folder = tmp_path_factory.mktemp("gpt")
    (folder / "train.txt").write_text("\n".join(story_lines(600, 1)) + "\n")
    (folder / "valid.txt").write_text("\n".join(story_lines(60, 2)) + "\n")
    args = ["--train_file", folder / "train.txt", "--validation_file", folder / "valid.txt"]
    run_recipe("finetune_gpt", [*args, "--output_dir", folder / "model", "--num_train_epochs", "3", *TINY_GPT])
    return folder


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    """A tiny Marian trained from scratch on the toy translation task, and its files."""
    folder = tmp_path_factory.mktemp("marian")
    for split, n, seed in (("train", 1500, 1), ("valid", 100, 2)):
        (folder / f"{split}.jsonl").write_text(
            "\n".join(json.dumps({"translation": p}) for p in toy_pairs(n, seed)) + "\n"
        )
    run_recipe(
        "finetune_translation",
        [
            *("--train_file", folder / "train.jsonl", "--validation_file", folder / "valid.jsonl"),
            *("--source_lang", "en", "--target_lang", "xx", "--output_dir", folder / "model"),
            *("--num_train_epochs", "6", *TINY_MARIAN),
        ],
    )
    return folder


def shapes(model) -> dict:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def compress(model_dir, eval_file, out, *chain):
    result = run_hfopt(
        "compress", model_dir, "--eval_file", eval_file, "--output_dir", out, "--latency_repeats", "4", *chain
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return read_json(out / "compression_report.json")


def test_compress_reports_perplexity_for_a_causal_lm(gpt, tmp_path):
    trained = read_json(gpt / "model" / "all_results.json")
    report = compress(
        gpt / "model",
        gpt / "valid.txt",
        tmp_path / "c",
        *("--prune_heads", "0.5", "--prune_ffn", "0.25", "--quantize", "dynamic_int8", "--max_new_tokens", "4"),
    )
    assert report["task"] == "causal_lm" and report["metric"] == "perplexity" and not report["higher_is_better"]
    stages = report["stages"]
    assert list(stages) == ["original", "prune_heads_0.5", "prune_ffn_0.25", "quantize_dynamic_int8"]
    original, pruned, int8 = stages["original"], stages["prune_ffn_0.25"], stages["quantize_dynamic_int8"]
    # the trained model, scored as a language model: far below the untrained model's perplexity
    assert original["perplexity"] < 0.5 * trained["eval_before_perplexity"]
    assert original["accuracy"] > trained["eval_before_accuracy"] + 0.2
    assert pruned["perplexity"] > original["perplexity"] and pruned["parameters"] < original["parameters"]
    assert int8["perplexity"] == pytest.approx(pruned["perplexity"], rel=0.05) and int8["size_reduction"] > 2
    assert int8["delta_perplexity"] == pytest.approx(int8["perplexity"] - original["perplexity"])
    assert report["latency"] == "per generated token (4 new tokens)"
    assert all(s["latency_b1_p50_ms"] > 0 and s["latency_b16_p50_ms"] > 0 for s in stages.values())
    assert "perplexity" in (tmp_path / "c" / "compression_report.md").read_text()
    # the written model is the last stage: reloaded and scored again, the same perplexity
    again = compress(tmp_path / "c" / "model", gpt / "valid.txt", tmp_path / "again", "--max_new_tokens", "2")
    assert again["stages"]["original"]["perplexity"] == pytest.approx(int8["perplexity"], rel=1e-5)


def test_compress_reports_bleu_for_a_translation_model(marian, tmp_path):
    trained = read_json(marian / "model" / "all_results.json")
    report = compress(
        marian / "model",
        marian / "valid.jsonl",
        tmp_path / "c",
        *("--source_lang", "en", "--target_lang", "xx", "--prune_heads", "0.5", "--quantize", "dynamic_int8"),
    )
    assert report["task"] == "seq2seq" and report["metrics"] == ["bleu", "chrf"]
    stages = report["stages"]
    original, int8 = stages["original"], stages["quantize_dynamic_int8"]
    # greedy decoding of the same references: the recipe's own BLEU
    assert original["bleu"] == pytest.approx(trained["eval_bleu"], abs=1.0) and original["bleu"] > 40
    assert stages["prune_heads_0.5"]["parameters"] < original["parameters"]
    assert abs(int8["bleu"] - stages["prune_heads_0.5"]["bleu"]) < 5 and int8["size_reduction"] > 2
    assert int8["delta_bleu"] == pytest.approx(int8["bleu"] - original["bleu"])
    assert all(s["latency_b16_p50_ms"] > 0 for s in stages.values())
    # a classification eval file does not fit a translation model: one line naming both
    csv = tmp_path / "dev.csv"
    csv.write_text("sentence,label\nthe day was sunny,1\n")
    bad = run_hfopt("compress", marian / "model", "--eval_file", csv, "--output_dir", tmp_path / "bad")
    assert bad.returncode == 2 and "does not fit the seq2seq model" in one_error_line(bad)


def test_a_head_pruned_causal_lm_fine_tunes_back(gpt, tmp_path):
    """prune → fine-tune in two commands: the pruned folder trains with its shapes and wins perplexity back."""
    pruned = compress(gpt / "model", gpt / "valid.txt", tmp_path / "p", "--prune_heads", "0.5", "--max_new_tokens", "2")
    lost = pruned["stages"]["prune_heads_0.5"]["perplexity"]
    out = tmp_path / "again"
    run_recipe(
        "finetune_gpt",
        [
            *("--model_name_or_path", tmp_path / "p" / "model", "--train_file", gpt / "train.txt"),
            *("--validation_file", gpt / "valid.txt", "--output_dir", out, "--num_train_epochs", "1"),
            *("--block_size", "64", "--learning_rate", "1e-3", "--per_device_train_batch_size", "8"),
            *("--disable_tqdm", "true", "--save_strategy", "no"),
        ],
    )
    results = read_json(out / "all_results.json")
    assert results["eval_before_perplexity"] > results["eval_perplexity"]
    assert results["eval_perplexity"] < lost
    # the fine-tuned model keeps the pruned shapes: one head of two in each block
    assert AutoConfig.from_pretrained(out).hfopt_heads_per_layer == [1, 1]
    assert shapes(load_trained_model(AutoModelForCausalLM, str(out))) == shapes(
        load_trained_model(AutoModelForCausalLM, str(tmp_path / "p" / "model"))
    )
    # and generates with its KV cache, as the model it came from (Trainer saves use_cache=False in config.json)
    assert GenerationConfig.from_pretrained(gpt / "model").use_cache is True
    assert GenerationConfig.from_pretrained(tmp_path / "p" / "model").use_cache is True
    assert load_trained_model(AutoModelForCausalLM, str(out)).generation_config.use_cache is True


def test_a_head_pruned_classifier_fine_tunes_and_distils_from_the_original(tiny_teacher, easy_task, tmp_path):
    pruned = compress(tiny_teacher, easy_task["validation"], tmp_path / "p", "--prune_heads", "0.5")
    folder = tmp_path / "p" / "model"
    pruned_shapes = shapes(load_trained_model(AutoModelForSequenceClassification, str(folder)))
    assert pruned["stages"]["prune_heads_0.5"]["parameters"] < pruned["stages"]["original"]["parameters"]

    # prune → fine-tune
    tuned = tmp_path / "tuned"
    run_recipe("finetune_bert", tiny_bert_args(folder, easy_task, tuned, "--save_strategy", "no"))
    # prune → distil from the original
    distilled = tmp_path / "distilled"
    run_recipe(
        "distill_bert",
        [
            *("--teacher_model_name_or_path", tiny_teacher, "--model_name_or_path", folder),
            *("--train_file", easy_task["train"], "--validation_file", easy_task["validation"]),
            *("--output_dir", distilled, "--num_train_epochs", "3", "--learning_rate", "2e-3"),
            *("--per_device_train_batch_size", "16", "--disable_tqdm", "true", "--save_strategy", "no"),
        ],
    )
    for out in (tuned, distilled):
        assert read_json(out / "all_results.json")["eval_accuracy"] >= 0.9
        assert shapes(load_trained_model(AutoModelForSequenceClassification, str(out))) == pruned_shapes
        heads = AutoConfig.from_pretrained(out).hfopt_heads_per_layer
        assert heads == AutoConfig.from_pretrained(folder).hfopt_heads_per_layer and sum(heads) == 4  # of 2 × 4


def test_gradual_pruning_from_recipe_flags_reaches_its_target(tiny_bert, easy_task, tmp_path):
    out = tmp_path / "out"
    # the tiny model leaves its loss plateau near step 60 (of 6 epochs × 25 steps): prune once it has learnt
    flags = ("--gradual_pruning_sparsity", "0.5", "--gradual_pruning_start_step", "80")
    flags += ("--gradual_pruning_end_step", "120", "--gradual_pruning_frequency", "10", "--save_strategy", "no")
    run_recipe("finetune_bert", tiny_bert_args(tiny_bert, easy_task, out, *flags, "--num_train_epochs", "6"))
    model = AutoModelForSequenceClassification.from_pretrained(out)
    weights = [module.weight for _, module in linear_layers(model, TASK_HEAD_PATTERNS)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.5, abs=0.005)
    assert torch.count_nonzero(model.classifier.weight) == model.classifier.weight.numel()  # the head is kept
    assert read_json(out / "all_results.json")["eval_accuracy"] >= 0.9
