"""Benchmark: `hfopt optimize` on a GPT-2-style language model, the fastest per generated token at batch 1 within
3% of its perplexity. Needs ../shared/data/tinyshakespeare.

    python bench/optimize_lm.py [--time_budget 30m] [--max_trials N] [--reuse]

1. model: a GPT-2 of 4 blocks × 256 (as in compress_chain_lm.py) trained by `finetune_gpt.py` on the first 80% of
   tinyshakespeare;
2. the search of recipes/searches/tinyshakespeare.yaml on it: trials trained on that text, decided on the next 10%
   (selection, which the model never saw), within --time_budget;
3. the search's own final report, on the last 10% of the text (which neither the model nor the search saw): the
   model and the chosen one timed interleaved (greedy generation, ms per new token at batch 1 and 16).

Prints and writes bench/results/optimize_lm.{json,md}. Goal: a model faster per token at batch 1 whose perplexity
on the evaluation text is within 3% of the model's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil

from common import (
    RESULTS,
    ROOT,
    accelerate_launch,
    gpt2_from_scratch,
    run_unless_done,
    shared_file,
    table,
    write_lines,
    write_results,
)

from hfopt.optimize import OptimizeConfig, optimize

SEARCH = ROOT / "recipes" / "searches" / "tinyshakespeare.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time_budget", default=None, help="the search's time (default: the YAML's)")
    parser.add_argument("--max_trials", type=int, default=None)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--epochs", type=float, default=3, help="the model's training epochs")
    parser.add_argument("--reuse", action="store_true", help="keep the model and resume the search in bench/results")
    options = parser.parse_args()

    from hfopt.args import read_yaml_config

    work = RESULTS / "optimize_lm"
    lines = shared_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8").splitlines()
    a, b = int(0.8 * len(lines)), int(0.9 * len(lines))
    train = write_lines(work / "train.txt", lines[:a])
    selection, evaluation = write_lines(work / "selection.txt", lines[a:b]), write_lines(work / "eval.txt", lines[b:])
    model = work / "model"
    command = accelerate_launch(
        ROOT / "recipes" / "finetune_gpt.py",
        [
            *("--train_file", train, "--validation_file", selection, "--output_dir", model, "--block_size", "128"),
            *("--per_device_train_batch_size", "16", "--save_strategy", "no", "--disable_tqdm", "true"),
            *("--start_fresh", "true", "--num_train_epochs", options.epochs, "--learning_rate", "1e-3"),
            *gpt2_from_scratch(options.layers, options.width),
        ],
    )
    took = run_unless_done(command, work / "model.log", model / "all_results.json", options.reuse)
    if took is not None:
        print(f"model: {took:.0f} s", flush=True)

    known = {f.name for f in dataclasses.fields(OptimizeConfig)} | {"model_dir", "output_dir"}
    values = read_yaml_config(str(SEARCH), known)
    values = {k: v for k, v in values.items() if k not in ("model_dir", "output_dir")}
    values.update(train_file=str(train), selection_file=str(selection), eval_file=str(evaluation))
    values.update({k: v for k, v in (("time_budget", options.time_budget), ("max_trials", options.max_trials)) if v})
    out = work / "search"
    if not options.reuse:
        shutil.rmtree(out, ignore_errors=True)
    result = optimize(str(model), OptimizeConfig(**values), out)
    seconds = json.loads((out / "optimize_state.json").read_text())["elapsed"]  # every run of the search
    write_tables(options, values, result, seconds, out)


def write_tables(options, values, result, seconds: float, out) -> None:
    from hfopt.optimize.outputs import describe

    kept = result.chosen or result.closest
    what = "hfopt optimize" if result.met else "hfopt optimize, closest (no trial met the budget)"
    labels = {"original": f"GPT-2 {options.layers}×{options.width}, fp32"}
    rows = []
    for name, s in (result.report or {"stages": {}})["stages"].items():
        label = labels.get(name, f"{what}, {name}: {describe(kept['params'])}")
        base = result.report["stages"]["original"]
        rows.append({"model": label, "key": "original" if name == "original" else "optimize",
                     "perplexity": s["perplexity"], "rise": s["perplexity"] / base["perplexity"] - 1,
                     "accuracy": s["accuracy"], "size_mb": s["size_bytes"] / 1e6, "smaller": s["size_reduction"],
                     "b1_ms": s["latency_b1_p50_ms"], "b16_ms": s["latency_b16_p50_ms"],
                     "faster_b1": s["speedup_b1"], "faster_b16": s["speedup_b16"]})  # fmt: skip
    columns = [
        ("model", "model", "s"),
        ("perplexity", "perplexity", ".2f"),
        ("rise", "rise", "+.1%"),
        ("accuracy", "next-token acc.", ".4f"),
        ("size_mb", "size MB", ".2f"),
        ("smaller", "× smaller", ".2f"),
        ("b1_ms", "b1 ms/token", ".2f"),
        ("b16_ms", "b16 ms/token", ".2f"),
        ("faster_b1", "× faster b1", ".2f"),
        ("faster_b16", "× faster b16", ".2f"),
    ]
    counts = {s: sum(r["status"] == s for r in result.trials) for s in ("complete", "screened out", "failed")}
    report = result.report or {}
    lines = [
        f"`hfopt optimize` on tinyshakespeare (max_relative_drop {values['max_relative_drop']}, objective "
        f"{values['objective']}, time budget {values.get('time_budget')}): {len(result.trials)} trials "
        f"({counts['complete']} complete, {counts['screened out']} screened out, {counts['failed']} failed) in "
        f"{seconds / 60:.0f} min; decided on the 10% of the text after the model's training text; rows below on the "
        f"last 10% ({report.get('eval_examples', 0)} lines; perplexity over blocks of 128 tokens), timed "
        f"interleaved (greedy generation, "
        f"{values['pipeline'].get('max_new_tokens', 16)} new tokens, ms per token, p50)",
        "",
        table(rows, columns),
    ]
    if (out / "optimize.png").is_file():
        shutil.copy2(out / "optimize.png", RESULTS / "optimize_lm.png")
        shutil.copy2(out / "optimize.png", ROOT / "docs" / "optimize_lm.png")  # for the snippet in docs/optimize.md
        lines += ["", "![perplexity against speed-up per token at batch 1, every trial](optimize_lm.png)"]
    payload = {"options": vars(options), "search": values, "rows": rows, "seconds": seconds, "report": report,
               "chosen": result.chosen, "trials": result.trials}  # fmt: skip
    write_results("optimize_lm", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
