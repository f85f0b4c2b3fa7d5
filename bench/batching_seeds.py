"""Benchmark: does the classification recipe's default batching (`--batching length`) cost accuracy against
random batches (`--batching samples`)? Several seeds on two real tasks, scored on their dev files:
SST-2 (single sentences; training phrases sampled as in bench/dynamic_batching.py) and MRPC (sentence pairs,
the GLUE files as distributed). MiniLM-L6 (demo extra), launched as the README does. Needs ../shared/data.

    python bench/batching_seeds.py [--seeds 0 1 2] [--tasks sst2 mrpc] [--reuse]

Writes bench/results/batching_seeds.{json,md}: per task and batching, dev accuracy (mean ± std over seeds, and
each seed) and the accuracy difference with its standard error (paired by seed). Accuracy only: speed is
bench/dynamic_batching.py's (run alone), so this one may share the machine; the JSON keeps each run's
samples/s for reference.
"""

from __future__ import annotations

import argparse
import json
import statistics

from common import (
    RESULTS,
    REUSE_HELP,
    ROOT,
    accelerate_launch,
    bench_env,
    run_unless_done,
    shared_file,
    sst2_sample,
    table,
    write_lines,
    write_results,
)

# per task: epochs, batch size and the flags naming its columns
TASKS = {
    "sst2": dict(epochs=1, batch_size=32, flags=[]),
    "mrpc": dict(
        epochs=3,
        batch_size=16,
        flags=["--text_column_names", "#1 String", "#2 String", "--label_column_name", "Quality"],
    ),
}
BATCHINGS = ("samples", "length")


def task_files(task: str, work, train_rows: int):
    if task == "sst2":
        return write_lines(work / "sst2_train.tsv", sst2_sample(train_rows, seed=0)), shared_file("sst2", "dev.tsv")
    return shared_file("mrpc", "train.tsv"), shared_file("mrpc", "dev.tsv")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    p.add_argument("--train_rows", type=int, default=8000, help="SST-2 training phrases (a fixed random sample)")
    p.add_argument("--mrpc_epochs", type=float, default=3)
    p.add_argument("--learning_rate", type=float, default=5e-5)
    p.add_argument(
        "--threads", type=int, default=None, help="OMP threads per run (1 when the machine is shared: no spin-waits)"
    )
    p.add_argument("--reuse", action="store_true", help=REUSE_HELP)
    options = p.parse_args()

    from hfopt.models import demo_model_path

    work = RESULTS / "batching_seeds"
    runs = []
    for task in options.tasks:
        spec = dict(TASKS[task], **({"epochs": options.mrpc_epochs} if task == "mrpc" else {}))
        train, dev = task_files(task, work, options.train_rows)
        for seed in options.seeds:  # seeds outside, batchings inside: machine drift spreads over both
            for batching in BATCHINGS:
                out = work / f"{task}_{batching}_seed{seed}"
                args = [
                    *("--model_name_or_path", demo_model_path(), "--train_file", train, "--validation_file", dev),
                    *("--output_dir", out, "--num_train_epochs", spec["epochs"], "--seed", seed),
                    *("--per_device_train_batch_size", spec["batch_size"], "--learning_rate", options.learning_rate),
                    *("--batching", batching, "--save_strategy", "no", "--disable_tqdm", "true"),
                    *spec["flags"],
                ]
                command = accelerate_launch(ROOT / "recipes" / "finetune_bert.py", args)
                env = bench_env(**({"OMP_NUM_THREADS": str(options.threads)} if options.threads else {}))
                run_unless_done(command, work / f"{out.name}.log", out / "all_results.json", options.reuse, env)
                results = json.loads((out / "all_results.json").read_text())
                runs.append(
                    {
                        "task": task,
                        "batching": batching,
                        "seed": seed,
                        "accuracy": results["eval_accuracy"],
                        "samples_per_second": results["train_samples_per_second"],
                    }
                )
                print(runs[-1], flush=True)

    rows = []
    for task in options.tasks:
        by = {b: {r["seed"]: r for r in runs if r["task"] == task and r["batching"] == b} for b in BATCHINGS}
        diffs = [by["length"][s]["accuracy"] - by["samples"][s]["accuracy"] for s in options.seeds]
        for batching in BATCHINGS:
            acc = [by[batching][s]["accuracy"] for s in options.seeds]
            speed = [by[batching][s]["samples_per_second"] for s in options.seeds]
            row = {
                "task": task,
                "batching": batching,
                "accuracy_mean": statistics.mean(acc),
                "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else None,
                "per_seed": " / ".join(f"{a:.4f}" for a in acc),
                "samples_per_second": statistics.mean(speed),
            }
            if batching == "length":
                row["diff"] = statistics.mean(diffs)
                row["diff_se"] = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else None
            rows.append(row)
    columns = [
        ("task", "task", "s"),
        ("batching", "--batching", "s"),
        ("accuracy_mean", "dev accuracy (mean)", ".4f"),
        ("accuracy_std", "std over seeds", ".4f"),
        ("per_seed", "per seed", "s"),
        ("diff", "length − samples (paired)", "+.4f"),
        ("diff_se", "± s.e.", ".4f"),
    ]
    described = {
        "sst2": f"SST-2 ({options.train_rows} phrases, 1 epoch, batch 32, dev 872 sentences)",
        "mrpc": f"MRPC (3,668 pairs, {options.mrpc_epochs:g} epochs, batch 16, dev 408 pairs)",
    }
    heading = (
        f"Batching and accuracy, seeds {', '.join(map(str, options.seeds))}: "
        + " and ".join(described[t] for t in options.tasks)
        + f"; MiniLM-L6, lr {options.learning_rate:g}"
    )
    write_results(
        "batching_seeds",
        {"options": vars(options), "runs": runs, "rows": rows},
        f"{heading}\n\n" + table(rows, columns),
    )


if __name__ == "__main__":
    main()
