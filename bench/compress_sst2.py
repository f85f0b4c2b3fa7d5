"""Benchmark: the pretrained MiniLM-L6 fine-tuned on SST-2, compressed to dynamic int8 (with int8
embeddings) by `hfopt compress`, against plain torch.ao dynamic int8 of the linear layers; fp32 and both int8
models timed interleaved on dev sentences. Needs the demo extra and ../shared/data/sst2.

    python bench/compress_sst2.py [--model_dir DIR] [--repeats 50]

Prints a table and writes bench/results/compress_sst2.json. Goals: accuracy within 1 point of fp32, ≥ 3.5×
smaller on disk, ≥ 3× faster at batch 16 and ≥ 2.2× at batch 1 (stretch: ≥ 3.6× / ≥ 2.7×).

Also splits the batch-16 time into the linear layers (what dynamic int8 speeds up) and everything else
(attention, GELU, layer norms, Python), and prints the speed-up that int8 linear layers at the int8 limit (4×
faster, the rest unchanged) would give on this machine: the ceiling for any dynamic-int8 post-processor here.
"""

import argparse
import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
sys.path.insert(0, str(ROOT))


def fine_tune(work: Path) -> Path:
    lines = (SST2 / "train.tsv").read_text(encoding="utf-8").splitlines()
    rows = [row for row in lines[1:] if len(row.split("\t")[0].split()) >= 8]
    random.Random(0).shuffle(rows)
    (work / "train.tsv").write_text("\n".join([lines[0], *rows[:6000]]) + "\n", encoding="utf-8")
    out = work / "fp32"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "recipes" / "finetune_bert.py"),
            "--train_file",
            work / "train.tsv",
            "--validation_file",
            SST2 / "dev.tsv",
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
            "--start_fresh",
            "true",
        ],
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return out


@torch.inference_mode()
def linear_layer_ms(model, batches: list[dict]) -> float:
    """Milliseconds per batch spent inside the linear layers (fp32 `aten::linear` or int8
    `quantized::linear_dynamic`, their inner ops included), from the PyTorch profiler."""
    from torch.profiler import ProfilerActivity, profile

    for batch in batches[:3]:
        model(**batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            model(**batch)
    linear_us = sum(
        event.cpu_time_total
        for event in prof.key_averages()
        if event.key in ("aten::linear", "quantized::linear_dynamic")
    )
    return linear_us / 1000 / len(batches)


def main() -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hfopt.compression import load_compressed, save_compressed
    from hfopt.compression.report import weights_size
    from hfopt.compression.tasks import load_task
    from hfopt.latency import batches_of, measure_latency

    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", default=None)
    parser.add_argument("--repeats", type=int, default=50)
    options = parser.parse_args()
    work = ROOT / "bench" / "results" / "compress_sst2"
    work.mkdir(parents=True, exist_ok=True)
    model_dir = Path(options.model_dir) if options.model_dir else fine_tune(work)

    subprocess.run(
        [
            sys.executable,
            "-m",
            "hfopt.cli",
            "compress",
            model_dir,
            "--eval_file",
            SST2 / "dev.tsv",
            "--quantize",
            "dynamic_int8",
            "--quantize_embeddings",
            "--output_dir",
            work / "hfopt_int8",
            "--latency_repeats",
            "5",
        ],
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=ROOT,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fp32 = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    plain = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
    save_compressed(plain, work / "plain_int8")
    hfopt_int8 = load_compressed(work / "hfopt_int8" / "model")
    models = {"fp32": fp32, "torch.ao int8 (linear)": plain, "hfopt int8 (+embeddings)": hfopt_int8}

    task = load_task("classification", fp32, tokenizer, str(SST2 / "dev.tsv"), str(model_dir))
    texts = task.texts
    sizes = {
        "fp32": weights_size(model_dir),
        "torch.ao int8 (linear)": weights_size(work / "plain_int8"),
        "hfopt int8 (+embeddings)": weights_size(work / "hfopt_int8" / "model"),
    }
    rows = {
        name: {"accuracy": task.evaluate(model)["accuracy"], "size_mb": sizes[name] / 1e6}
        for name, model in models.items()
    }
    for batch_size in (1, 16):
        latency = measure_latency(models, batches_of(tokenizer, texts[:256], batch_size), repeats=options.repeats)
        for name, figures in latency.items():
            rows[name][f"b{batch_size}_p50_ms"] = figures["p50_ms"]
            rows[name][f"b{batch_size}_p90_ms"] = figures["p90_ms"]
    base = rows["fp32"]
    for row in rows.values():
        row["size_reduction"] = base["size_mb"] / row["size_mb"]
        row["speedup_b1"] = base["b1_p50_ms"] / row["b1_p50_ms"]
        row["speedup_b16"] = base["b16_p50_ms"] / row["b16_p50_ms"]
    b16 = batches_of(tokenizer, texts[:256], 16)
    fp32_linear, int8_linear = linear_layer_ms(fp32, b16), linear_layer_ms(hfopt_int8, b16)
    fp32_rest = base["b16_p50_ms"] - fp32_linear
    split = {
        "fp32_linear_ms": fp32_linear,
        "fp32_rest_ms": fp32_rest,
        "linear_share": fp32_linear / base["b16_p50_ms"],
        "int8_linear_ms": int8_linear,
        "int8_linear_speedup": fp32_linear / int8_linear,
        "ceiling_speedup_b16_at_4x_linear": base["b16_p50_ms"] / (fp32_rest + fp32_linear / 4),
    }
    result = {"threads": torch.get_num_threads(), "repeats": options.repeats, "models": rows, "b16_time_split": split}
    (ROOT / "bench" / "results" / "compress_sst2.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'model':26} {'dev acc':>8} {'MB':>7} {'size ×':>7} {'b1 ms':>7} {'b16 ms':>7} {'b1 ×':>6} {'b16 ×':>6}")
    for name, r in rows.items():
        print(
            f"{name:26} {r['accuracy']:8.4f} {r['size_mb']:7.1f} {r['size_reduction']:7.2f} {r['b1_p50_ms']:7.2f} "
            f"{r['b16_p50_ms']:7.2f} {r['speedup_b1']:6.2f} {r['speedup_b16']:6.2f}"
        )
    print(
        f"batch 16, fp32: {fp32_linear:.1f} ms in linear layers ({split['linear_share']:.0%}), {fp32_rest:.1f} ms "
        f"elsewhere; int8 linear layers {split['int8_linear_speedup']:.2f}× faster than fp32 ones; with 4× "
        f"faster linear layers the model could be at most {split['ceiling_speedup_b16_at_4x_linear']:.2f}× faster"
    )
    print(f"{torch.get_num_threads()} threads; results in bench/results/compress_sst2.json")


if __name__ == "__main__":
    main()
