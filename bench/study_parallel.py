"""Benchmark: one study run one run after another, then `--parallel 2` (each run on its own cores, one thread per
core): wall time of the whole study, training time per run, and whether the metrics agree. The study is the
offline demo (finetune_bert.py's defaults: MiniLM-L6 on the bundled sentiment data, the demo extra), two variants
× two seeds.

    python bench/study_parallel.py [--seeds 1 2] [--epochs 2]

Writes bench/results/study_parallel.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import sys

import yaml
from common import RESULTS, ROOT, run, table, write_results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--parallel", type=int, nargs="+", default=[1, 2])
    options = p.parse_args()

    work = RESULTS / "study_parallel"
    work.mkdir(parents=True, exist_ok=True)
    study = work / "study.yaml"
    spec = {
        "name": "parallel_demo",
        "recipe": "finetune_bert",
        "args": {"num_train_epochs": options.epochs, "disable_tqdm": True},
        "seeds": options.seeds,
        "measure_latency": False,
        "variants": [{"name": "baseline"}, {"name": "cosine", "args": {"lr_scheduler_type": "cosine"}}],
    }
    study.write_text(yaml.safe_dump(spec))
    rows, metrics = [], {}
    for parallel in options.parallel:
        out = work / f"parallel-{parallel}"
        command = [sys.executable, "-m", "hfopt.cli", "compare", study, "--output_dir", out, "--no_progress"]
        seconds = run([*command, "--parallel", str(parallel), "--start_fresh"], work / f"parallel-{parallel}.log")
        with open(out / "study.csv") as f:
            runs = list(csv.DictReader(f))
        metrics[parallel] = {(r["variant"], r["seed"]): r["eval_accuracy"] for r in runs}
        rows.append(
            {
                "parallel": parallel,
                "runs": len(runs),
                "wall_s": seconds,
                "train_s": sum(float(r["train_runtime"]) for r in runs) / len(runs),
                "threads": ",".join(sorted({r["torch_threads"] for r in runs})),
                "accuracy": sum(float(r["eval_accuracy"]) for r in runs) / len(runs),
            }
        )
        print(f"--parallel {parallel}: {seconds:.0f} s", flush=True)
    for row in rows:
        row["speedup"] = rows[0]["wall_s"] / row["wall_s"]
        row["same_metrics"] = "yes" if metrics[row["parallel"]] == metrics[rows[0]["parallel"]] else "no"
    columns = [
        ("parallel", "runs at once", "d"),
        ("runs", "runs", "d"),
        ("threads", "threads per run", "s"),
        ("wall_s", "study wall s", ".0f"),
        ("train_s", "train s per run", ".1f"),
        ("speedup", "× sequential", ".2f"),
        ("accuracy", "mean dev accuracy", ".4f"),
        ("same_metrics", "same accuracies", "s"),
    ]
    heading = (
        f"A study run sequentially and --parallel N: the offline demo (MiniLM-L6), 2 variants × {len(options.seeds)} "
        f"seeds, {options.epochs:g} epochs"
    )
    payload = {"options": vars(options), "rows": rows, "study": spec, "root": str(ROOT)}
    write_results("study_parallel", payload, f"{heading}\n\n{table(rows, columns)}")


if __name__ == "__main__":
    main()
