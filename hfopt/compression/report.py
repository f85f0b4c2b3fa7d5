"""The compression report: for the original model and each stage, parameters, non-zero parameters, size on disk,
the task metric, CPU latency p50/p90 at batch 1 and 16 (all stages timed interleaved), and the changes against
the original. Written as compression_report.json and compression_report.md.

Example::

    report = build_report(stages, sizes, task, repeats=20)
    write_report(report, "out")
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..hardware import cpu_info
from ..latency import speedups, unstable_latency
from ..run import write_json_atomic, write_text_atomic
from .quantization import is_torchao_tensor

logger = logging.getLogger(__name__)

__all__ = ["build_report", "count_parameters", "latency_note", "weights_size", "write_report"]

WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".data", ".bin")


def count_parameters(model) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting the int8 weights inside quantized modules too; (0, 0) for a
    model outside PyTorch."""
    from torch.ao.nn.quantized import Embedding as QEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    if not isinstance(model, nn.Module):
        return getattr(model, "num_parameters", 0), getattr(model, "num_nonzero_parameters", 0)
    total = nonzero = 0
    seen = set()
    for module in model.modules():
        if isinstance(module, QLinear):
            weight, bias = module._packed_params._weight_bias()
            tensors = [weight.int_repr()] + ([bias] if bias is not None else [])
        elif isinstance(module, QEmbedding):
            tensors = [module.weight().int_repr()]
        else:
            tensors = [p for p in module.parameters(recurse=False) if id(p) not in seen]
            seen.update(id(p) for p in tensors)
        for t in tensors:
            if is_torchao_tensor(t) and hasattr(t, "qdata"):
                t = t.qdata  # torchao's int8 tensors: one int8 per weight (int4 formats would pack two)
            total += t.numel()
            nonzero += int(torch.count_nonzero(t))
    return total, nonzero


def weights_size(path: str | Path) -> int:
    """Bytes of the weight files (safetensors, ONNX and its external data, else PyTorch .bin) of a saved model: a
    file, or the files at the top of its folder (a recipe's output_dir also holds checkpoint-*/ folders and
    training_args.bin, which are not the model). A folder with both safetensors and .bin weights (a Hub snapshot
    often is) holds one model twice: its safetensors count."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    files = [p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)]
    files = [p for p in files if p.name != "training_args.bin"]
    if any(not p.name.endswith(".bin") for p in files):
        files = [p for p in files if not p.name.endswith(".bin")]
    return sum(p.stat().st_size for p in files)


def build_report(
    stages: dict[str, object], sizes: dict[str, int], task, repeats: int = 20, known: dict[str, dict] | None = None
) -> dict:
    """Measure every stage (the first is the original): parameters, size, the task metric, latency; then the
    changes of each against the original (`delta_<metric>`, `size_reduction`, `speedup_b1`, `speedup_b16`).
    A stage whose timings were unstable (`hfopt.latency.unstable_latency`) gets `latency_unstable` (the reasons);
    `latency_reliable` is False when any stage's were, and the original's instability taints every speed-up.
    `known`: task metrics measured before on the same data ({stage: metrics}), not evaluated again."""
    rows = {}
    for name, model in stages.items():
        parameters, nonzero = count_parameters(model)
        rows[name] = {
            "parameters": parameters,
            "nonzero_parameters": nonzero,
            "size_bytes": sizes[name],
            **((known or {}).get(name) or task.evaluate(model)),
        }
    for name, figures in task.latency(stages, repeats=repeats).items():
        rows[name].update(figures)
    original_name = next(iter(rows))
    speedups(rows, original_name)
    for row in rows.values():
        row["latency_unstable"] = unstable_latency(row)
    original = rows[original_name]
    metrics = [k for k in original if k in ("accuracy", "f1", "perplexity", "bleu", "chrf")]
    for row in rows.values():
        for metric in metrics:
            row[f"delta_{metric}"] = row[metric] - original[metric]
        row["size_reduction"] = original["size_bytes"] / row["size_bytes"]
    headline, higher_is_better = task.headline
    report = {
        "task": task.name,
        "metric": headline,
        "higher_is_better": higher_is_better,
        "metrics": metrics,
        "latency": "forward pass"
        if task.name == "classification"
        else f"per generated token ({task.max_new_tokens} new tokens)",
        "eval_examples": len(task.texts),
        "cpu": cpu_info(),
        "stages": rows,
        "latency_reliable": not any(row["latency_unstable"] for row in rows.values()),
    }
    note = latency_note(report)
    if note:
        logger.warning(note)
    return report


def latency_note(report: dict) -> str | None:
    """The warning a report carries when timings were unstable: which stages and why, and that their speed-ups
    (marked `?` in the table) are not to be quoted. None when all were steady."""
    stages = report["stages"]
    unstable = {name: row["latency_unstable"] for name, row in stages.items() if row.get("latency_unstable")}
    if not unstable:
        return None
    original = next(iter(stages))
    which = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in unstable.items())
    scope = "every speed-up" if original in unstable else "the speed-ups of these stages"
    return (
        f"Latency figures are unreliable: timings were unstable ({which}), so {scope} (marked ?) may be far off; "
        "rerun on an idle machine (more --latency_repeats help) before quoting them."
    )


def write_report(report: dict, output_dir: str | Path) -> None:
    """compression_report.json and a Markdown table, compression_report.md, written atomically."""
    write_json_atomic(Path(output_dir) / "compression_report.json", report)
    metrics = report["metrics"]
    columns = [
        "parameters",
        "non-zero",
        "size MB",
        *metrics,
        f"Δ {report['metric']}",
        "b1 p50 ms",
        "b1 p90 ms",
        "b16 p50 ms",
        "b16 p90 ms",
        "size ×",
        "speed-up b1",
        "speed-up b16",
    ]
    timed = any("seconds" in r for r in report["stages"].values())  # a pipeline's stages: time to make each
    if timed:
        columns.append("stage s")
    lines = [
        f"# Compression report: {report['task']}, {report['eval_examples']} eval examples",
        "",
        "| stage | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    original = next(iter(report["stages"]))
    original_unstable = bool(report["stages"][original].get("latency_unstable"))
    for name, r in report["stages"].items():
        mark = "?" if original_unstable or r.get("latency_unstable") else ""
        cells = [
            f"{r['parameters']:,}",
            f"{r['nonzero_parameters']:,}",
            f"{r['size_bytes'] / 1e6:.2f}",
            *(f"{r[m]:.4f}" if m != "perplexity" else f"{r[m]:.2f}" for m in metrics),
            f"{r['delta_' + report['metric']]:+.4f}",
            *(f"{r[f'latency_b{b}_{p}_ms']:.2f}" for b in (1, 16) for p in ("p50", "p90")),
            f"{r['size_reduction']:.2f}",
            f"{r['speedup_b1']:.2f}{mark}",
            f"{r['speedup_b16']:.2f}{mark}",
        ]
        if timed:
            cells.append(f"{r['seconds']:.0f}" if r.get("seconds") is not None else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    threads = next(iter(report["stages"].values()))["threads"]
    cpu = report["cpu"]
    sets = ", ".join(k for k in ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx") if cpu.get(k)) or "none"
    lines += [
        "",
        f"Latency: {report['latency']}, {threads} CPU threads, stages run interleaved. CPU: {cpu['model']} "
        f"(int8/bf16 instruction sets: {sets}).",
        *(("", f"**{latency_note(report)}**") if latency_note(report) else ()),
        *(line for note in report.get("notes", []) for line in ("", note)),
    ]
    trained = {name: r["training"] for name, r in report["stages"].items() if r.get("training")}
    if trained:
        lines += ["", "Training stages:", ""]
        for name, t in trained.items():
            resumed = f", resumed from {t['resumed_from']}" if t.get("resumed_from") else ""
            lines.append(
                f"- {name}: {t['objective']}, {t['epochs']:g} epochs, {t['steps']} steps, train loss "
                f"{t['train_loss']:.4f}, {t['train_seconds'] or 0:.0f} s{resumed}"
            )
    write_text_atomic(Path(output_dir) / "compression_report.md", "\n".join(lines) + "\n")
