"""recipes/finetune_translation.py end to end: a tiny Marian from scratch, hub-style and table data, DDP, real text."""

import gzip
import json

import pytest

from tests.testing_utils import TINY_MARIAN, needs_shared_data, read_json, run_recipe, toy_pairs, train_losses

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def parallel_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mt")
    for split, n, seed in (("train", 1500, 1), ("valid", 100, 2)):
        (folder / f"{split}.jsonl").write_text(
            "\n".join(json.dumps({"translation": p}) for p in toy_pairs(n, seed)) + "\n"
        )
    rows = ["en\txx"] + [f"{p['en']}\t{p['xx']}" for p in toy_pairs(1500, 1)]
    (folder / "train.tsv").write_text("\n".join(rows) + "\n")
    return folder


def test_tiny_marian_from_scratch_learns(parallel_files, tmp_path):
    out = tmp_path / "out"
    result = run_recipe(
        "finetune_translation",
        [
            "--train_file",
            parallel_files / "train.jsonl",
            "--validation_file",
            parallel_files / "valid.jsonl",
            "--test_file",
            parallel_files / "valid.jsonl",
            "--do_predict",
            "true",
            "--source_lang",
            "en",
            "--target_lang",
            "xx",
            "--output_dir",
            out,
            "--num_train_epochs",
            "6",
            *TINY_MARIAN,
        ],
    )
    results = read_json(out / "all_results.json")
    assert results["eval_bleu"] > results["eval_before_bleu"] + 30
    assert results["eval_chrf"] > results["eval_before_chrf"]
    assert 2 <= results["eval_gen_len"] <= 24
    losses = train_losses(out)
    assert losses[-1] < 0.3 * losses[0]
    predictions = (out / "predictions.txt").read_text().splitlines()
    assert len(predictions) == 100 and "BLEU before training" in result.stdout


def test_label_smoothing_trains_with_decoder_inputs_made_from_the_labels(parallel_files, tmp_path):
    """With --label_smoothing_factor the Trainer takes the labels out of the batch before the forward pass: the
    collator must have made the decoder inputs from them (the model it holds), else the model has no decoder input."""
    out = tmp_path / "out"
    run_recipe(
        "finetune_translation",
        ["--train_file", parallel_files / "train.jsonl", "--validation_file", parallel_files / "valid.jsonl",
         "--source_lang", "en", "--target_lang", "xx", "--output_dir", out, "--num_train_epochs", "1",
         "--logging_steps", "5", "--label_smoothing_factor", "0.1", "--eval_before_training", "false",
         *TINY_MARIAN],
    )  # fmt: skip
    losses = train_losses(out)
    assert losses and losses[-1] < losses[0]


def test_two_column_tsv_under_two_process_ddp(parallel_files, tmp_path):
    out = tmp_path / "out"
    run_recipe(
        "finetune_translation",
        [
            "--train_file",
            parallel_files / "train.tsv",
            "--source_lang",
            "en",
            "--target_lang",
            "xx",
            "--output_dir",
            out,
            "--num_train_epochs",
            "8",
            *TINY_MARIAN,
            "--per_device_train_batch_size",
            "16",
        ],
        launcher=["--config_file", "accelerate_configs/multi_gpu.yaml", "--num_processes", "2"],
    )
    info = read_json(out / "run_info.json")
    assert info["distributed_type"] == "MULTI_CPU" and info["global_batch_size"] == 32
    results = read_json(out / "all_results.json")
    assert results["eval_bleu"] > results["eval_before_bleu"] + 20


def test_missing_language_is_a_clear_error(parallel_files, tmp_path):
    result = run_recipe(
        "finetune_translation",
        [
            "--train_file",
            parallel_files / "train.jsonl",
            "--source_lang",
            "en",
            "--target_lang",
            "de",
            "--output_dir",
            tmp_path / "o",
            *TINY_MARIAN,
        ],
        check=False,
    )
    assert result.returncode == 2
    assert "translation pairs have no 'de' text; languages found: en, xx" in result.stderr


@pytest.mark.real_model
def test_real_parallel_corpus_multi30k(tmp_path):
    folder = needs_shared_data("multi30k")

    def read(name, n):
        with gzip.open(folder / name, "rt", encoding="utf-8") as fh:
            return [line.strip() for _, line in zip(range(n), fh, strict=False)]

    for split, prefix, n in (("train", "train", 6000), ("valid", "val", 200)):
        rows = [
            json.dumps({"translation": {"en": e, "de": d}})
            for e, d in zip(read(f"{prefix}.en.gz", n), read(f"{prefix}.de.gz", n), strict=True)
        ]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    run_recipe(
        "finetune_translation",
        [
            "--train_file",
            tmp_path / "train.jsonl",
            "--validation_file",
            tmp_path / "valid.jsonl",
            "--source_lang",
            "en",
            "--target_lang",
            "de",
            "--output_dir",
            out,
            "--model_type",
            "marian",
            "--config_overrides",
            "d_model=128,encoder_layers=2,decoder_layers=2,encoder_attention_heads=4,"
            "decoder_attention_heads=4,encoder_ffn_dim=256,decoder_ffn_dim=256,max_position_embeddings=64,scale_embedding=True",
            "--tokenizer_vocab_size",
            "2000",
            "--max_source_length",
            "48",
            "--max_target_length",
            "48",
            "--num_train_epochs",
            "2",
            "--learning_rate",
            "2e-3",
            "--per_device_train_batch_size",
            "32",
            "--save_strategy",
            "no",
            "--eval_strategy",
            "no",
            "--generation_num_beams",
            "1",
        ],
        threads=None,
    )
    results = read_json(out / "all_results.json")
    print(f"multi30k en-de BLEU {results['eval_before_bleu']:.2f} -> {results['eval_bleu']:.2f}")
    assert results["eval_bleu"] > results["eval_before_bleu"] + 1.0
