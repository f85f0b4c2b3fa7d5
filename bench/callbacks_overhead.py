"""Benchmark: what hfopt's callbacks cost per training step. A plain `Trainer` against the same Trainer with
every hfopt callback that runs on every step (throughput with MFU, loss watchdog, early stopping on a time
budget, run record, gradual pruning before its start step), with L1 regularization off and on. Needs nothing
but the install: a MiniLM-sized BERT built from its config trains on random token batches.

    python bench/callbacks_overhead.py [--steps 40] [--repeats 5] [--batch_size 32] [--length 64]

Runs are interleaved (plain, hfopt, hfopt + L1, plain, ...), each `--steps` optimizer steps after a warm-up run;
the step time is the Trainer's train_runtime / steps, and a variant's ratio is the median over repeats of its
step time over the plain Trainer's in the same repeat. Prints a table and writes
bench/results/callbacks_overhead.{json,md}. Goal: hfopt's callbacks (L1 off) ≤ 1.03× the plain step time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
from common import table, write_results
from datasets import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from hfopt.args import RunArguments
from hfopt.callbacks import EarlyStoppingCallback, L1RegularizationCallback, LossWatchdogCallback, ThroughputCallback
from hfopt.compression import GradualPruningCallback
from hfopt.hardware import configure_cpu_threads
from hfopt.run import RunRecordCallback, plan_output_dir


def callbacks(variant: str, output_dir: str, args) -> list:
    if variant == "plain":
        return []
    plan = plan_output_dir(args, RunArguments(start_fresh=True), {"bench": variant})
    chosen = [
        ThroughputCallback(peak_flops=1e12),
        LossWatchdogCallback(action="skip", spike_factor=100),
        EarlyStoppingCallback(early_stopping_patience=None, max_train_time=3600),
        RunRecordCallback(plan, {"bench": variant}, {}),
        GradualPruningCallback(target_sparsity=0.5, start_step=10_000, end_step=20_000),
    ]
    if variant == "hfopt_l1":
        chosen.append(L1RegularizationCallback(1e-6))
    return chosen


def step_time(variant: str, data, options) -> float:
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    )
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            out,
            max_steps=options.steps,
            per_device_train_batch_size=options.batch_size,
            learning_rate=1e-4,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            logging_steps=10,
            use_cpu=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks(variant, out, args))
        return trainer.train().metrics["train_runtime"] / options.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    options = parser.parse_args()
    configure_cpu_threads()
    rows = options.steps * options.batch_size
    ids = torch.randint(1000, 30000, (rows, options.length), generator=torch.Generator().manual_seed(0))
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": [i % 2 for i in range(rows)]})

    variants = ("plain", "hfopt", "hfopt_l1")
    step_time("plain", data, options)  # warm-up: allocator, kernels
    times = {v: [] for v in variants}
    for repeat in range(options.repeats):
        for variant in variants:
            times[variant].append(step_time(variant, data, options))
        print(f"repeat {repeat}: " + ", ".join(f"{v} {times[v][-1] * 1e3:.1f} ms" for v in variants), flush=True)
    results = []
    for variant in variants:
        ratios = [t / p for t, p in zip(times[variant], times["plain"], strict=True)]
        results.append(
            {
                "variant": variant,
                "step_ms": statistics.median(times[variant]) * 1e3,
                "ratio": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
            }
        )
    columns = [
        ("variant", "variant", "s"),
        ("step_ms", "median step ms", ".1f"),
        ("ratio", "× plain (median)", ".3f"),
        ("ratio_min", "min", ".3f"),
        ("ratio_max", "max", ".3f"),
    ]
    heading = (
        f"Callback overhead: BERT 6×384 from its config, batch {options.batch_size} × {options.length} tokens, "
        f"{options.steps} steps × {options.repeats} interleaved repeats ({torch.get_num_threads()} threads)"
    )
    write_results(
        "callbacks_overhead",
        {"options": vars(options), "rows": results, "times_s": times},
        f"{heading}\n\n{table(results, columns)}",
    )


if __name__ == "__main__":
    main()
