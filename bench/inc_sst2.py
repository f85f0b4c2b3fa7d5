"""Benchmark: Intel Neural Compressor's accuracy-driven tuning on the teacher of bench/optimize_sst2.py, beside the
model `hfopt optimize` chose and the hand-built chain, in one report. Needs the bench extra (neural-compressor-pt
3.10), the demo extra and ../shared/data/sst2; run bench/compress_chain_sst2.py and bench/optimize_sst2.py first.

    python bench/inc_sst2.py [--time_budget 90m] [--calibration_rows 512]

INC 3.x tunes PyTorch models with `autotune` (a config set, a tolerable relative loss, a trial cap; no time budget:
this script stops it at the first evaluation past --time_budget). Without intel-extension-for-pytorch (no build for
the torch we run) the one int8 path that runs on BERT here is static int8 through PT2E (`INT8StaticQuantConfig`:
torch.export, then quantize/dequantize nodes around fp32 weights); INC's docs compile that graph with inductor to
run it as int8, as this script does. Its dynamic int8 (also PT2E) fails on BERT, its weight-only int8 (RTN) runs
fp32 matmuls, SmoothQuant needs IPEX (bench/README.md). The tuning decides on the same 2,400 held-out sentences as
the search (the budget: one accuracy point, as INC's relative loss), calibrates on training phrases, and is
reported on the dev sentences, timed interleaved with the fp32 teacher (eager and compiled), the chain's int8
model and the search's chosen model.

Prints and writes bench/results/inc_sst2.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from common import RESULTS, report_row, table, write_results  # noqa: I001


class Compiled:
    """A compiled PT2E graph as the report calls a model: PT2E graphs refuse `.eval()` (they have no train mode),
    which the report's timing calls; parameters counted as the graph's."""

    def __init__(self, graph):
        self.graph, self.compiled = graph, torch.compile(graph, dynamic=True)
        self.num_parameters = sum(p.numel() for p in graph.parameters())
        self.num_nonzero_parameters = sum(int((p != 0).sum()) for p in graph.parameters())

    def eval(self) -> Compiled:
        return self

    def __call__(self, **batch):
        return self.compiled(**batch)


class _OutOfTime(Exception):
    """Raised from the evaluation INC calls once the time budget is spent: the tuning stops there."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time_budget", default="90m", help="the tuning's time (INC has none of its own)")
    parser.add_argument("--calibration_rows", type=int, default=512, help="training phrases to calibrate on")
    parser.add_argument("--max_drop", type=float, default=0.01, help="absolute accuracy budget, as the search's")
    options = parser.parse_args()
    try:
        import neural_compressor.torch  # noqa: F401
    except ImportError:
        print("bench/inc_sst2.py needs Intel Neural Compressor: pip install -e '.[bench]'")
        return

    from hfopt.optimize.config import parse_duration

    work = RESULTS / "compress_chain_sst2"
    teacher_dir, chain_dir, chosen_dir = work / "teacher", work / "chain" / "model", RESULTS / "optimize_sst2" / "model"
    selection, distill = work / "selection.tsv", work / "distill.tsv"
    for path in (teacher_dir, chain_dir, chosen_dir, selection, distill):
        if not path.exists():
            raise SystemExit(f"{path} is missing: run bench/compress_chain_sst2.py and bench/optimize_sst2.py first")
    from hfopt.compression.tasks import load_task
    from hfopt.pipeline import load_source

    teacher, tokenizer, _ = load_source(str(teacher_dir))
    select_task = load_task("classification", teacher, tokenizer, str(selection), str(teacher_dir))
    phrases = [line.split("\t")[0] for line in distill.read_text(encoding="utf-8").splitlines()[1:]]
    calibration = random.Random(0).sample(phrases, options.calibration_rows)
    tuned = tune(teacher, tokenizer, select_task, calibration, options.max_drop, parse_duration(options.time_budget))
    report, sizes = compare(teacher, tokenizer, teacher_dir, chain_dir, chosen_dir, tuned)
    write_tables(options, tuned, report, sizes)


def tune(teacher, tokenizer, task, calibration: list[str], max_drop: float, seconds: float) -> dict:
    """INC `autotune` of static int8 (PT2E) on the exported teacher until the selection accuracy is within
    `max_drop` (INC's relative loss from the teacher's accuracy) or its configs or the time run out; the best
    trial compiled with inductor."""
    from neural_compressor.torch.quantization import INT8StaticQuantConfig, TuningConfig, autotune
    from torch.export import Dim, export

    start = time.monotonic()
    example = dict(tokenizer(calibration[:4], padding=True, return_tensors="pt"))  # ≥ 2 rows: dims stay dynamic
    shapes = {name: {0: Dim("batch", max=64), 1: Dim("length", max=512)} for name in example}
    graph = export(teacher, (), example, dynamic_shapes=shapes, strict=False).module()
    graph._exported, graph.dynamic_shapes = True, shapes  # as INC's own export marks a model

    batches = [dict(tokenizer(calibration[i : i + 16], padding=True, truncation=True, max_length=128,
                              return_tensors="pt")) for i in range(0, len(calibration), 16)]  # fmt: skip
    base = task.evaluate(teacher)["accuracy"]
    trials: list[dict] = []  # INC's baseline (a copy of the exported graph), then each quantized config
    best: list = []  # (accuracy, model) of the most accurate quantized trial: kept when the time runs out

    def calibrate(model) -> None:
        with torch.no_grad():
            for batch in batches:
                model(**batch)

    def evaluate(model) -> float:
        accuracy = task.evaluate(model)["accuracy"]
        trials.append({"accuracy": accuracy, "drop": base - accuracy, "seconds": time.monotonic() - start})
        if len(trials) > 1 and (not best or accuracy > best[0]):
            best[:] = [accuracy, model]
        if time.monotonic() - start > seconds:
            raise _OutOfTime
        return accuracy

    configs = INT8StaticQuantConfig(act_sym=[True, False], act_algo=["minmax", "kl"])  # INC's default set: 4
    error, model = None, None
    try:
        model = autotune(graph, TuningConfig(config_set=[configs], tolerable_loss=max_drop / base), eval_fn=evaluate,
                         run_fn=calibrate)  # fmt: skip
    except _OutOfTime:
        error, model = "time budget spent", best[1] if best else None
    except Exception as err:  # a failed export, quantization or config: a row of dashes with its first line
        error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]
    tuning_seconds = time.monotonic() - start
    quantized = trials[1:]  # the first evaluation is INC's baseline (the exported fp32 graph)
    result = {"base_accuracy": base, "trials": quantized, "tuning_seconds": tuning_seconds, "error": error,
              "model": None, "met": False}  # fmt: skip
    if model is not None:
        result["selection_accuracy"] = task.evaluate(model)["accuracy"]
        result["met"] = base - result["selection_accuracy"] <= max_drop + 1e-9
        torch._inductor.config.freezing = True  # weights as constants: inductor lowers the int8 pattern
        result["model"] = Compiled(model)
        warm(result["model"], tokenizer, calibration)
        result["compile_seconds"] = time.monotonic() - start - tuning_seconds
    return result


@torch.inference_mode()
def warm(model, tokenizer, texts: list[str]) -> None:
    """Compile for the batch sizes the report times (batch 1 is its own specialisation), outside the timing."""
    for n in (1, 16, 7):
        model(**dict(tokenizer(texts[:n], padding=True, truncation=True, max_length=128, return_tensors="pt")))


def compare(teacher, tokenizer, teacher_dir, chain_dir, chosen_dir, tuned: dict) -> tuple[dict, dict]:
    """One report on the dev sentences: the fp32 teacher (eager and compiled), the chain, the search's chosen model
    and INC's tuned model, timed interleaved."""
    from common import shared_file

    from hfopt.compression.io import load_compressed
    from hfopt.compression.onnx import EXPORT_RECORD, load_onnx
    from hfopt.compression.report import build_report, weights_size
    from hfopt.compression.tasks import load_task

    dev = shared_file("sst2", "dev.tsv")
    compiled = torch.compile(teacher, dynamic=True)
    texts = [line.split("\t")[0] for line in dev.read_text(encoding="utf-8").splitlines()[1:]]
    warm(compiled, tokenizer, texts)
    onnx = (chosen_dir / EXPORT_RECORD).is_file()
    models = {
        "teacher": teacher,
        "teacher_compiled": compiled,
        "chain": load_compressed(chain_dir).eval(),
        "optimize": load_onnx(chosen_dir, spinning=False) if onnx else load_compressed(chosen_dir).eval(),
    }
    size = weights_size(teacher_dir)
    sizes = {"teacher": size, "teacher_compiled": size, "chain": weights_size(chain_dir),
             "optimize": weights_size(chosen_dir)}  # fmt: skip
    if tuned["model"] is not None:
        models["inc"] = tuned["model"]
        sizes["inc"] = size  # INC saves the Q/DQ graph with its fp32 weights: no smaller file
    task = load_task("classification", teacher, tokenizer, str(dev), str(teacher_dir))
    return build_report(models, sizes, task), sizes


def write_tables(options, tuned: dict, report: dict, sizes: dict) -> None:
    stages = report["stages"]
    base = stages["teacher"]
    search = json.loads((RESULTS / "optimize_sst2.json").read_text())
    chosen = search["chosen"] or {}
    minutes = {"optimize": search["seconds"] / 60,
               "inc": (tuned["tuning_seconds"] + tuned.get("compile_seconds", 0)) / 60}  # fmt: skip
    from hfopt.optimize.outputs import describe

    labels = {
        "teacher": "teacher (MiniLM-L6, fp32, eager)",
        "teacher_compiled": "teacher, torch.compile (inductor, fp32)",
        "chain": "hand-built chain (compress_chain_sst2.py, int8)",
        "optimize": f"hfopt optimize, trial {chosen.get('trial')}: {describe(chosen.get('params', {}))}",
        "inc": "INC autotune: static int8 (PT2E) + torch.compile"
        + ("" if tuned["met"] else " (closest: no config within the budget on the selection)"),
    }
    rows = [{**report_row(labels[name], name, s, base), "minutes": minutes.get(name)} for name, s in stages.items()]
    if tuned["model"] is None:
        rows.append({"model": f"INC autotune: failed ({tuned['error']})", "key": "inc"})
    columns = [("model", "model", "s"), ("accuracy", "dev accuracy", ".4f"), ("drop", "drop", "+.4f"),
               ("size_mb", "size MB", ".1f"), ("b1_ms", "b1 ms", ".2f"), ("b16_ms", "b16 ms", ".1f"),
               ("faster_b1", "× faster b1", ".2f"), ("faster_b16", "× faster b16", ".2f"),
               ("minutes", "search min", ".0f")]  # fmt: skip
    drops = ", ".join(f"{t['drop'] * 100:+.2f}" for t in tuned["trials"]) or "none"
    lines = [
        f"Intel Neural Compressor's `autotune` (static int8 through PT2E; tolerable loss {options.max_drop} absolute "
        f"= {options.max_drop / tuned['base_accuracy']:.4f} relative; time budget {options.time_budget}) on the "
        f"teacher: {len(tuned['trials'])} trial(s) in {tuned['tuning_seconds'] / 60:.1f} min (selection-set accuracy "
        f"lost, points: {drops}), compiled in {tuned.get('compile_seconds', 0) / 60:.1f} min"
        + (f"; stopped: {tuned['error']}" if tuned["error"] else "")
        + f". All rows on the dev sentences ({report['eval_examples']}), timed interleaved ({base['threads']} "
        "threads, p50); a compiled model's size is its weights' (INC's saved graph keeps them in fp32); search min: "
        "the search's or the tuning's time (INC's with compiling; the search's with training its student)",
        "",
        table(rows, columns),
    ]
    payload = {"options": vars(options), "rows": rows, "report": report, "sizes": sizes,
               "inc": {k: v for k, v in tuned.items() if k != "model"}}  # fmt: skip
    write_results("inc_sst2", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
