"""Benchmark (GPU): training throughput of BERT-base-size and GPT-2-small-size models (random init from their
configs) for a fixed number of steps in fp32, fp16 and bf16, with and without `torch_compile`, fused AdamW and
SDPA attention: tokens/s, MFU (ThroughputCallback's figure: 6 × parameters × tokens / time / the device's dense
bf16 peak) and peak memory. On a machine without a CUDA GPU it says so and exits 0.

    python bench/gpu.py [--steps 60] [--models bert gpt2] [--quick]

Every setting trains with the plain Trainer plus ThroughputCallback; figures are from the steps after the
first 10 (compilation and allocator warm-up). Prints a table and writes bench/results/gpu.{json,md}.
Goal (H100): BERT-base fine-tuning in bf16 at ≥ 40% MFU.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile

import torch
from common import RESULTS, table, write_results
from datasets import Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from hfopt.callbacks import ThroughputCallback

MODELS = {
    "bert": dict(batch=32, length=128),  # BERT-base: 12 × 768, fine-tuning a classifier
    "gpt2": dict(batch=16, length=512),  # GPT-2 small: 12 × 768, causal LM
}


def build(name: str, attention: str):
    torch.manual_seed(0)
    if name == "bert":
        return BertForSequenceClassification(BertConfig(num_labels=2, attn_implementation=attention))
    return GPT2LMHeadModel(GPT2Config(attn_implementation=attention))


class LastLogs(TrainerCallback):
    """Keeps the throughput figures logged after the warm-up steps."""

    def __init__(self, warmup: int):
        self.warmup, self.logs = warmup, []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step > self.warmup and logs and "tokens_per_second" in logs:
            self.logs.append(dict(logs))


def run(name: str, precision: str, compile_: bool, fused: bool, attention: str, steps: int) -> dict:
    shape = MODELS[name]
    rows = steps * shape["batch"]
    ids = torch.randint(1000, 30000, (rows, shape["length"]), generator=torch.Generator().manual_seed(0))
    columns = {"input_ids": ids.tolist()}
    columns["labels"] = [i % 2 for i in range(rows)] if name == "bert" else ids.tolist()
    data = Dataset.from_dict(columns)
    model = build(name, attention)
    torch.cuda.reset_peak_memory_stats()
    keep = LastLogs(warmup=10)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            out,
            max_steps=steps,
            per_device_train_batch_size=shape["batch"],
            learning_rate=1e-4,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            torch_compile=compile_,
            optim="adamw_torch_fused" if fused else "adamw_torch",
            logging_steps=10,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[ThroughputCallback(), keep])
        trainer.train()
    last = keep.logs[-1] if keep.logs else {}
    result = {
        "model": name,
        "precision": precision,
        "compile": compile_,
        "fused_adamw": fused,
        "attention": attention,
        "tokens_per_second": last.get("tokens_per_second"),
        "mfu": last.get("mfu"),
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30,
    }
    del trainer, model
    gc.collect()
    torch.cuda.empty_cache()
    return result


def settings(quick: bool):
    for precision in ("fp32", "fp16", "bf16"):
        yield precision, False, True, "sdpa"
    if quick:
        return
    yield "bf16", True, True, "sdpa"  # + torch_compile
    yield "bf16", False, False, "sdpa"  # unfused AdamW
    yield "bf16", False, True, "eager"  # attention without SDPA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--quick", action="store_true", help="fp32/fp16/bf16 only")
    options = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA GPU on this machine; nothing measured (run it where one is).")
        RESULTS.mkdir(parents=True, exist_ok=True)
        return
    rows = []
    for name in options.models:
        for precision, compile_, fused, attention in settings(options.quick):
            rows.append(run(name, precision, compile_, fused, attention, options.steps))
            print(json.dumps(rows[-1]), flush=True)
    columns = [
        ("model", "model", "s"),
        ("precision", "precision", "s"),
        ("compile", "torch_compile", ""),
        ("fused_adamw", "fused AdamW", ""),
        ("attention", "attention", "s"),
        ("tokens_per_second", "tokens/s", ",.0f"),
        ("mfu", "MFU", ".1%"),
        ("peak_memory_gb", "peak GiB", ".1f"),
    ]
    heading = f"GPU training throughput, {options.steps} steps (BERT-base batch 32 × 128, GPT-2 small batch 16 × 512)"
    write_results("gpu", {"options": vars(options), "rows": rows}, f"{heading}\n\n{table(rows, columns)}")


if __name__ == "__main__":
    sys.exit(main())
