"""What the benchmarks share: the SST-2 sample, launching recipes as users do, the machine a figure came from,
and the table + JSON every benchmark writes.

    from common import ROOT, machine, run, sst2_sample, write_results
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SST2 = SHARED / "sst2"
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        sys.exit(f"{path} is absent: this benchmark needs the shared data folder beside the project")
    return path


def sst2_sample(rows: int | None, seed: int = 0, min_words: int = 0, skip: int = 0, split: str = "train") -> list[str]:
    """Lines (header first) of SST-2: `rows` phrases of at least `min_words` words, shuffled with `seed`, after
    the first `skip` of them (rows=None: all). The real-model tests use the same sample."""
    lines = shared_file("sst2", f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    body = [row for row in lines[1:] if len(row.split("\t")[0].split()) >= min_words]
    random.Random(seed).shuffle(body)
    return [lines[0], *body[skip : None if rows is None else skip + rows]]


def sst2_split(train_rows: int | None, held_out: int = 2400, seed: int = 0) -> tuple[list[str], list[str]]:
    """(training lines, held-out lines), headers first: `held_out` whole SST-2 training sentences drawn with
    `seed`, and `train_rows` phrases (shuffled with `seed`; None: all) of the other sentences, none of them inside
    a held-out sentence.

    SST-2's training rows are the phrases of its sentences' parse trees, and a model trained on a random part of
    them has seen labelled pieces of most sentences. On such sentences a fine-tuned teacher beat its compressed
    students by two to three points where it had trained on pieces holding over a third of a sentence's words, and
    by half a point at most where it had seen little. Dev's sentences have no piece in the training rows; neither
    have the held-out ones (which takes most one-word rows out of the training pool too)."""

    def words(row: str) -> list[str]:
        return row.split("\t")[0].split()

    lines = shared_file("sst2", "train.tsv").read_text(encoding="utf-8").splitlines()
    text = {f" {' '.join(words(row))} ": row for row in lines[1:]}  # once each (SST-2 repeats some rows)
    rows_with = defaultdict(list)  # word -> the rows holding it
    for t in text:
        for word in set(t.split()):
            rows_with[word].append(t)

    def inside(t: str, rows) -> bool:  # whether `t` lies inside one of `rows` (looked for where its rarest word is)
        rarest = min(set(t.split()), key=lambda w: len(rows_with[w]), default=None)
        return rarest is not None and any(u in rows and len(u) > len(t) and t in u for u in rows_with[rarest])

    every = set(text)
    whole = sorted(t for t in text if not inside(t, every))  # a sentence (or the largest labelled part of one)
    random.Random(seed).shuffle(whole)
    sentences = set(whole[:held_out])
    phrases = [row for t, row in text.items() if t not in sentences and not inside(t, sentences)]
    random.Random(seed).shuffle(phrases)
    return [lines[0], *phrases[:train_rows]], [lines[0], *(text[t] for t in whole[:held_out])]


def trained_on(model_dir: Path, lines: list[str]) -> bool:
    """Whether the recipe run in `model_dir` trained on `lines` (as `write_lines` writes them): the sha256 its
    run_info.json recorded of --train_file."""
    import hashlib

    try:
        recorded = json.loads((model_dir / "run_info.json").read_text())["data_files"]["train_file"]["sha256"]
    except (OSError, ValueError, KeyError):
        return False
    return recorded == hashlib.sha256(("\n".join(lines) + "\n").encode("utf-8")).hexdigest()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def bench_env(**extra: str) -> dict:
    """Offline, this checkout's hfopt first; threads are left to the launcher and the recipe."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env.pop("OMP_NUM_THREADS", None)
    return {**env, **extra}


def run(command: list, log: Path, env: dict | None = None) -> float:
    """Run `command` (logging to `log`), fail loudly with the log's tail; the wall-clock seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run([str(c) for c in command], stdout=out, stderr=subprocess.STDOUT, env=env or bench_env())
    seconds = time.perf_counter() - started
    if code.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} exited {code.returncode}:\n" + log.read_text()[-3000:])
    return seconds


def run_unless_done(command: list, log: Path, output: Path, reuse: bool, env: dict | None = None) -> float | None:
    """`run(command, log)`, unless `reuse` and `output` exists from the very same command (recorded beside the
    log): a changed command always runs again. None when skipped."""
    record, key = log.with_suffix(".command.json"), [str(c) for c in command]
    if reuse and output.exists() and record.exists() and json.loads(record.read_text()) == key:
        return None
    record.unlink(missing_ok=True)
    seconds = run(command, log, env)
    record.write_text(json.dumps(key) + "\n")
    return seconds


REUSE_HELP = (
    "keep finished steps of an earlier run (a recipe run is reused only if its configuration matches, a compress "
    "step only if its command is unchanged)"
)


def compress_step(work: Path, out: str, model, args: list, reuse: bool, seconds: dict) -> dict:
    """`hfopt compress MODEL ARGS --output_dir WORK/OUT` (skipped when `reuse` finds it done), its wall seconds
    in `seconds[out]`; returns its compression report."""
    report = work / out / "compression_report.json"
    command = [sys.executable, "-m", "hfopt.cli", "compress", model, *args, "--output_dir", work / out]
    took = run_unless_done(command, work / f"{out}.log", report, reuse)
    if took is not None:
        seconds[out] = took
        print(f"{out}: {took:.0f} s", flush=True)
    return json.loads(report.read_text())


def accelerate_launch(script: Path, args: list, config: str | None = None) -> list:
    """`accelerate launch [--config_file accelerate_configs/CONFIG.yaml] SCRIPT ARGS`, the README's way."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if config:
        launcher += ["--config_file", ROOT / "accelerate_configs" / f"{config}.yaml"]
    return [*launcher, script, *args]


def gpt2_from_scratch(layers: int, width: int, vocab: int = 2000) -> list:
    """finetune_gpt.py's flags for a GPT-2 of `layers` blocks × `width` made from its config (one head per 64
    dimensions, 128 positions) with a BPE tokenizer of `vocab` tokens trained on the fly."""
    config = f"n_layer={layers},n_head={max(1, width // 64)},n_embd={width},n_positions=128"
    return ["--model_type", "gpt2", "--config_overrides", config, "--tokenizer_vocab_size", str(vocab)]


def machine() -> dict:
    """The CPU (and its int8/bf16 instruction sets), the GPU if any, and the library versions."""
    import torch

    from hfopt.hardware import cpu_info
    from hfopt.run.record import library_versions

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_info(), "gpu": gpu, "versions": library_versions(), "date": time.strftime("%Y-%m-%d")}


def describe(info: dict) -> str:
    cpu = info["cpu"]
    sets = ", ".join(k for k in ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx") if cpu.get(k)) or "none"
    where = info["gpu"] or f"{cpu['model']}, {cpu['physical_cores']} cores (int8/bf16 instruction sets: {sets})"
    return f"{where}; torch {info['versions'].get('torch')}, transformers {info['versions'].get('transformers')}"


def report_row(label: str, key: str, stage: dict, base: dict) -> dict:
    """A table row of one stage of a compression report (`base`: the original's): accuracy and its drop, size,
    latency at batch 1 and 16, and the ratios against the original."""
    return {
        "model": label,
        "key": key,
        "accuracy": stage["accuracy"],
        "drop": base["accuracy"] - stage["accuracy"],
        "size_mb": stage["size_bytes"] / 1e6,
        "smaller": stage["size_reduction"],
        "b1_ms": stage["latency_b1_p50_ms"],
        "b16_ms": stage["latency_b16_p50_ms"],
        "faster_b1": stage["speedup_b1"],
        "faster_b16": stage["speedup_b16"],
    }


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A Markdown table of `rows`: columns are (key, header, format)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [format(row[k], f) if row.get(k) is not None else "–" for k, _, f in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(name: str, payload: dict, markdown: str) -> Path:
    """bench/results/NAME.json (the payload and the machine) and NAME.md (the table); prints the table."""
    info = machine()
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**payload, "machine": info}, indent=2) + "\n")
    text = f"{markdown}\n\nMachine: {describe(info)}; {info['date']}.\n"
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
    print(f"results in {path.relative_to(ROOT)} and {name}.md")
    return path
