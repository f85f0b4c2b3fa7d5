"""Benchmark: prune → fine-tune → int8 for a GPT-2-style language model on tinyshakespeare, with perplexity at
every stage. Needs ../shared/data/tinyshakespeare.

    python bench/compress_chain_lm.py [--layers 4] [--width 256] [--epochs 3] [--reuse]

1. model: a GPT-2 (random init from its config, a BPE tokenizer trained on the fly) trained by `finetune_gpt.py`
   on the first 90% of the text; the last 10% is the evaluation text;
2. pruned: 40% of its heads and 30% of its feed-forward neurons removed (`hfopt compress --prune_heads 0.4
   --prune_ffn 0.3`);
3. fine-tuned: the pruned model trained again for one epoch (`finetune_gpt.py --model_name_or_path PRUNED`);
4. int8: the fine-tuned model with int8 linear layers (`hfopt compress --quantize dynamic_int8`), every stage
   added with `--compare` and timed interleaved (greedy generation, latency per new token, batch 1 and 16).

Prints a table (perplexity, next-token accuracy, size, latency) and the recovery: (pruned − fine-tuned) /
(pruned − model) perplexity. Writes bench/results/compress_chain_lm.{json,md}.
"""

from __future__ import annotations

import argparse
import json

from common import (
    RESULTS,
    REUSE_HELP,
    ROOT,
    accelerate_launch,
    compress_step,
    gpt2_from_scratch,
    run,
    shared_file,
    table,
    write_lines,
    write_results,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--prune_heads", type=float, default=0.4)
    parser.add_argument("--prune_ffn", type=float, default=0.3)
    parser.add_argument("--latency_repeats", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help=REUSE_HELP)
    options = parser.parse_args()

    work = RESULTS / "compress_chain_lm"
    lines = shared_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8").splitlines()
    cut = int(0.9 * len(lines))
    train, valid = write_lines(work / "train.txt", lines[:cut]), write_lines(work / "valid.txt", lines[cut:])
    data = ["--train_file", train, "--validation_file", valid, "--block_size", "128", "--disable_tqdm", "true"]
    data += ["--per_device_train_batch_size", "16", "--save_strategy", "no"]
    if not options.reuse:
        data += ["--start_fresh", "true"]
    seconds = {}

    def train_lm(out: str, *args) -> dict:
        command = accelerate_launch(ROOT / "recipes" / "finetune_gpt.py", [*data, "--output_dir", work / out, *args])
        seconds[out] = run(command, work / f"{out}.log")
        print(f"{out}: {seconds[out]:.0f} s", flush=True)
        return json.loads((work / out / "all_results.json").read_text())

    def compress(model, out: str, *args) -> dict:
        return compress_step(
            work, out, model, ["--eval_file", valid, "--max_new_tokens", "16", *args], options.reuse, seconds
        )

    trained = train_lm(
        "model",
        *gpt2_from_scratch(options.layers, options.width),
        *("--num_train_epochs", options.epochs, "--learning_rate", "1e-3"),
    )
    compress(
        work / "model",
        "pruned",
        *("--prune_heads", options.prune_heads, "--prune_ffn", options.prune_ffn, "--latency_repeats", "2"),
    )
    tuned = train_lm(
        "fine_tuned",
        *("--model_name_or_path", work / "pruned" / "model", "--num_train_epochs", "1", "--learning_rate", "3e-4"),
    )
    report = compress(
        work / "fine_tuned",
        "int8",
        *("--quantize", "dynamic_int8", "--latency_repeats", options.latency_repeats),
        *("--compare", f"model={work / 'model'}", "--compare", f"pruned={work / 'pruned' / 'model'}"),
    )
    stages = report["stages"]
    names = {
        "model": f"1. GPT-2 {options.layers}×{options.width}, fp32",
        "pruned": f"2. {options.prune_heads:.0%} heads + {options.prune_ffn:.0%} FFN pruned",
        "original": "3. pruned, fine-tuned 1 epoch",
        "quantize_dynamic_int8": "4. 3 + int8 linear layers",
    }
    base = stages["model"]
    rows = [
        {
            "stage": label,
            "perplexity": stages[key]["perplexity"],
            "accuracy": stages[key]["accuracy"],
            "parameters": stages[key]["parameters"],
            "size_mb": stages[key]["size_bytes"] / 1e6,
            "smaller": base["size_bytes"] / stages[key]["size_bytes"],
            "b1_ms": stages[key]["latency_b1_p50_ms"],
            "b16_ms": stages[key]["latency_b16_p50_ms"],
            "faster_b16": base["latency_b16_p50_ms"] / stages[key]["latency_b16_p50_ms"],
        }
        for key, label in names.items()
    ]
    lost = stages["pruned"]["perplexity"] - base["perplexity"]
    recovery = (stages["pruned"]["perplexity"] - stages["original"]["perplexity"]) / lost if lost > 0 else None
    columns = [
        ("stage", "stage", "s"),
        ("perplexity", "perplexity", ".2f"),
        ("accuracy", "next-token acc.", ".4f"),
        ("parameters", "parameters", ",d"),
        ("size_mb", "size MB", ".2f"),
        ("smaller", "× smaller", ".2f"),
        ("b1_ms", "b1 ms/token", ".2f"),
        ("b16_ms", "b16 ms/token", ".2f"),
        ("faster_b16", "× faster b16", ".2f"),
    ]
    text = (
        f"Prune → fine-tune → int8 on tinyshakespeare (evaluation: the last 10% of the text, blocks of 128 tokens; "
        f"perplexity before training {trained['eval_before_perplexity']:.1f})\n\n{table(rows, columns)}\n\n"
        f"Recovery of the perplexity lost by pruning (+{lost:.2f}): "
        + (f"{recovery:.0%}" if recovery is not None else "n/a")
        + f" after one epoch of fine-tuning (the recipe's own eval perplexity: {tuned['eval_perplexity']:.2f})."
    )
    payload = {"options": vars(options), "rows": rows, "recovery": recovery, "seconds": seconds, "report": report}
    write_results("compress_chain_lm", payload, text)


if __name__ == "__main__":
    main()
