"""recipes/finetune_gpt.py end to end on tiny GPT-2 models: packing and padded modes, LoRA, real text."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.testing_utils import TINY_GPT, needs_shared_data, read_json, run_recipe, story_lines, train_losses

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    (folder / "train.txt").write_text("\n".join(story_lines(600, 1)) + "\n")
    (folder / "valid.txt").write_text("\n".join(story_lines(60, 2)) + "\n")
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in story_lines(300, 3)) + "\n")
    return folder


def test_packed_training_from_scratch_halves_perplexity(text_files, tmp_path):
    out = tmp_path / "out"
    result = run_recipe(
        "finetune_gpt",
        [
            "--train_file",
            text_files / "train.txt",
            "--validation_file",
            text_files / "valid.txt",
            "--output_dir",
            out,
            "--num_train_epochs",
            "3",
            *TINY_GPT,
        ],
    )
    results = read_json(out / "all_results.json")
    assert results["eval_perplexity"] <= 0.5 * results["eval_before_perplexity"]
    assert results["eval_perplexity"] == pytest.approx(2.718281828 ** results["eval_loss"], rel=1e-6)
    assert results["eval_accuracy"] > results["eval_before_accuracy"] + 0.2
    losses = train_losses(out)
    assert losses[-1] < 0.5 * losses[0]
    sample = (out / "sample.txt").read_text()
    assert sample.startswith("Once upon a time") and "Perplexity before training" in result.stdout
    # the tokenizer trained on the fly is saved with the model, and both reload
    model = AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).vocab_size == model.config.vocab_size == 300


def test_padded_mode_masks_padding_in_labels(text_files, tmp_path):
    from datasets import Dataset, DatasetDict

    from hfopt.data import DataSources, seq2seq_collator, tokenize_for_causal_lm
    from hfopt.tokenization import train_byte_level_bpe

    tokenizer = train_byte_level_bpe(story_lines(100, 0), vocab_size=300)
    raw = DatasetDict(
        {"train": Dataset.from_dict({"text": ["The cat runs home.", "The dog sleeps and the bird eats."]})}
    )
    blocks = tokenize_for_causal_lm(raw, tokenizer, "text", 64, DataSources(), packing=False)["train"]
    args = type("A", (), {"mixed_precision": "no", "fp16": False, "bf16": False})()
    batch = seq2seq_collator(tokenizer, args)([blocks[0], blocks[1]])
    short = len(blocks[0]["input_ids"])
    assert (batch["labels"][0, short:] == -100).all() and (batch["labels"][0, :short] >= 0).all()
    assert batch["labels"][0, short - 1] == tokenizer.eos_token_id  # each example ends with eos, learnt too
    assert (batch["attention_mask"][0, short:] == 0).all()

    out = tmp_path / "out"
    run_recipe(
        "finetune_gpt",
        [
            "--train_file",
            text_files / "train.jsonl",
            "--output_dir",
            out,
            "--packing",
            "false",
            "--num_train_epochs",
            "3",
            *TINY_GPT,
        ],
    )
    results = read_json(out / "all_results.json")
    assert results["eval_perplexity"] < 0.5 * results["eval_before_perplexity"]


def test_lora_trains_adapters_only_and_merges(text_files, tmp_path):
    base = tmp_path / "base"
    run_recipe(
        "finetune_gpt",
        [
            "--train_file",
            text_files / "train.txt",
            "--validation_file",
            text_files / "valid.txt",
            "--output_dir",
            base,
            "--num_train_epochs",
            "1",
            *TINY_GPT,
        ],
    )
    out = tmp_path / "lora"
    run_recipe(
        "finetune_gpt",
        [
            "--model_name_or_path",
            base,
            "--train_file",
            text_files / "train.txt",
            "--validation_file",
            text_files / "valid.txt",
            "--output_dir",
            out,
            "--use_peft",
            "true",
            "--lora_r",
            "4",
            "--merge_adapters",
            "true",
            "--num_train_epochs",
            "1",
            *TINY_GPT[6:],
        ],
    )
    from safetensors.torch import load_file

    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)  # only adapter weights were saved
    base_model = AutoModelForCausalLM.from_pretrained(base)
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    base_state, merged_state = base_model.state_dict(), merged.state_dict()
    changed = [k for k in base_state if not torch.equal(base_state[k], merged_state[k])]
    assert changed and all("attn.c_attn" in k for k in changed)  # peft's GPT-2 default target
    results = read_json(out / "all_results.json")
    assert results["eval_loss"] < results["eval_before_loss"]


@pytest.mark.real_model
def test_real_text_tinyshakespeare(tmp_path):
    text = needs_shared_data("tinyshakespeare", "input.txt").read_text(encoding="utf-8").splitlines()
    (tmp_path / "train.txt").write_text("\n".join(text[:8000]) + "\n")
    (tmp_path / "valid.txt").write_text("\n".join(text[-1000:]) + "\n")
    out = tmp_path / "out"
    run_recipe(
        "finetune_gpt",
        [
            "--train_file",
            tmp_path / "train.txt",
            "--validation_file",
            tmp_path / "valid.txt",
            "--output_dir",
            out,
            "--model_type",
            "gpt2",
            "--config_overrides",
            "n_layer=2,n_head=4,n_embd=128,n_positions=128",
            "--tokenizer_vocab_size",
            "1000",
            "--block_size",
            "128",
            "--num_train_epochs",
            "1",
            "--learning_rate",
            "2e-3",
            "--per_device_train_batch_size",
            "16",
            "--save_strategy",
            "no",
            "--prompt",
            "ROMEO:",
        ],
        threads=None,
    )
    results = read_json(out / "all_results.json")
    print(f"tinyshakespeare perplexity {results['eval_before_perplexity']:.1f} -> {results['eval_perplexity']:.1f}")
    assert results["eval_perplexity"] < 0.5 * results["eval_before_perplexity"]
