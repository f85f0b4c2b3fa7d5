"""Benchmark: training speed of `finetune_bert.py` against the plain `Trainer` scripts a user would otherwise
write, on SST-2 with the pretrained MiniLM-L6 (the demo extra), same epochs, seed, learning rate and batch size.
Needs ../shared/data/sst2.

    python bench/recipe_vs_baselines.py [--train_rows 8000] [--epochs 1] [--variants NAME ...]

| variant | what runs |
|---|---|
| run_glue | plain Trainer, every example padded to 128 (examples/pytorch/run_glue.py's default), `python` |
| careful | plain Trainer, per-batch dynamic padding (DataCollatorWithPadding), `python` |
| recipe | `accelerate launch recipes/finetune_bert.py`, its defaults (the README's way) |
| recipe_samples | the recipe with random batches (`--batching samples`, the default before length grouping) |
| recipe_tokens | the recipe with token-budget batches (`--batching tokens --max_tokens_per_batch 1024`) |
| recipe_bf16 | the recipe under `--config_file accelerate_configs/cpu_bf16.yaml` (bf16 autocast on the CPU) |

Train samples/s come from each run's Trainer (`train_samples_per_second`: the training loop, the recipe's
per-epoch evaluation and checkpoint included); dev accuracy on all 872 dev sentences. Prints a table and writes
bench/results/recipe_vs_baselines.{json,md}. `bench/cpu_bf16.py` runs the recipe and recipe_bf16 rows alone.

Goals: the recipe's defaults ≥ 5× run_glue's samples/s and ≥ 2× careful's, at equal or better dev accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys

from common import RESULTS, ROOT, accelerate_launch, run, shared_file, sst2_sample, table, write_lines, write_results

VARIANTS = ("run_glue", "careful", "recipe", "recipe_samples", "recipe_tokens", "recipe_bf16")


def command(variant: str, model: str, train, dev, out, options) -> list:
    if variant in ("run_glue", "careful"):
        padding = "max_length" if variant == "run_glue" else "dynamic"
        return [
            sys.executable,
            ROOT / "bench" / "baselines" / "plain_trainer.py",
            *(model, train, dev, out, "--padding", padding, "--epochs", options.epochs),
            *("--batch_size", options.batch_size, "--learning_rate", options.learning_rate, "--seed", options.seed),
        ]
    args = [
        *("--model_name_or_path", model, "--train_file", train, "--validation_file", dev, "--output_dir", out),
        *("--num_train_epochs", options.epochs, "--per_device_train_batch_size", options.batch_size),
        *("--learning_rate", options.learning_rate, "--seed", options.seed, "--start_fresh", "true"),
        *("--disable_tqdm", "true"),
    ]
    extra = {
        "recipe_samples": ["--batching", "samples"],
        "recipe_tokens": ["--batching", "tokens", "--max_tokens_per_batch", "1024"],
    }.get(variant, [])
    config = "cpu_bf16" if variant == "recipe_bf16" else None
    return accelerate_launch(ROOT / "recipes" / "finetune_bert.py", [*args, *extra], config=config)


def measure(variants, options, name: str) -> list[dict]:
    from hfopt.models import demo_model_path

    work = RESULTS / name
    train = write_lines(work / "train.tsv", sst2_sample(options.train_rows, seed=0))
    dev = shared_file("sst2", "dev.tsv")
    model = demo_model_path()
    rows = []
    for variant in variants:
        out = work / variant
        seconds = run(command(variant, model, train, dev, out, options), work / f"{variant}.log")
        results = json.loads((out / "all_results.json").read_text())
        rows.append(
            {
                "variant": variant,
                "samples_per_second": results["train_samples_per_second"],
                "train_seconds": results["train_runtime"],
                "wall_seconds": seconds,
                "accuracy": results["eval_accuracy"],
            }
        )
        print(f"{variant}: {rows[-1]}", flush=True)
    for reference in ("run_glue", "careful", "recipe"):
        base = next((r for r in rows if r["variant"] == reference), None)
        for row in rows:
            row[f"vs_{reference}"] = row["samples_per_second"] / base["samples_per_second"] if base else None
    return rows


COLUMNS = [
    ("variant", "variant", "s"),
    ("samples_per_second", "train samples/s", ".1f"),
    ("train_seconds", "train s", ".0f"),
    ("wall_seconds", "wall s", ".0f"),
    ("accuracy", "dev accuracy", ".4f"),
    ("vs_run_glue", "× run_glue", ".2f"),
    ("vs_careful", "× careful", ".2f"),
]


def parser(variants=VARIANTS) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train_rows", type=int, default=8000, help="SST-2 training phrases (a fixed random sample)")
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--learning_rate", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(variants))
    return p


def main() -> None:
    options = parser().parse_args()
    rows = measure(options.variants, options, "recipe_vs_baselines")
    heading = (
        f"Training speed on SST-2 ({options.train_rows} training phrases, {options.epochs:g} epoch, batch "
        f"{options.batch_size}, MiniLM-L6, dev 872 sentences)"
    )
    write_results(
        "recipe_vs_baselines", {"options": vars(options), "rows": rows}, f"{heading}\n\n{table(rows, COLUMNS)}"
    )


if __name__ == "__main__":
    main()
