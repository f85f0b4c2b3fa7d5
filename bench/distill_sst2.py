"""Benchmark: distil the pretrained MiniLM-L6 fine-tuned on SST-2 into a 3-layer student; report teacher vs
student dev accuracy, retention and CPU speed-up. Needs the demo extra and ../shared/data/sst2.

    python bench/distill_sst2.py [--train_rows 20000] [--epochs 2]

Prints a table and writes bench/results/distill_sst2.json. Goal: retention ≥ 0.97 with ≥ 1.9× CPU speed-up.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, SST2, sst2_sample


def run(recipe: str, args: list) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), *map(str, args)], check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train_rows", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--work_dir", default=str(ROOT / "bench" / "results" / "distill_sst2"))
    options = parser.parse_args()
    work = Path(options.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    (work / "train.tsv").write_text("\n".join(sst2_sample(options.train_rows, seed=0)) + "\n", encoding="utf-8")
    common = [
        "--train_file",
        work / "train.tsv",
        "--validation_file",
        SST2 / "dev.tsv",
        "--max_seq_length",
        "64",
        "--per_device_train_batch_size",
        "32",
        "--num_train_epochs",
        options.epochs,
        "--save_strategy",
        "no",
        "--eval_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--start_fresh",
        "true",
    ]
    started = time.time()
    run("finetune_bert", [*common, "--output_dir", work / "teacher", "--learning_rate", "1e-4"])
    teacher_seconds = time.time() - started
    run(
        "distill_bert",
        [
            *common,
            "--output_dir",
            work / "student",
            "--teacher_model_name_or_path",
            work / "teacher",
            "--student_num_layers",
            "3",
            "--learning_rate",
            "1e-4",
            "--alpha",
            "0.5",
            "--temperature",
            "2",
        ],
    )
    report = json.loads((work / "student" / "distillation_report.json").read_text())
    report["setup"] = {
        "train_rows": options.train_rows,
        "epochs": options.epochs,
        "teacher_training_seconds": teacher_seconds,
        "total_seconds": time.time() - started,
    }
    out = ROOT / "bench" / "results" / "distill_sst2.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    models, summary = report["models"], report["summary"]
    print(f"{'model':8} {'dev acc':>8} {'params':>12} {'b1 ms':>8} {'b16 ms':>8}")
    for name, m in models.items():
        print(
            f"{name:8} {m['accuracy']:8.4f} {m['parameters']:12,} {m['latency_b1_p50_ms']:8.2f} "
            f"{m['latency_b16_p50_ms']:8.2f}"
        )
    print(
        f"retention {summary['retention']:.3f} (goal ≥ 0.97), speed-up {summary['speedup_b1']:.2f}x / "
        f"{summary['speedup_b16']:.2f}x at batch 1 / 16 (goal ≥ 1.9x); written to {out}"
    )


if __name__ == "__main__":
    main()
