"""The compression report: for the original model and each stage, parameters, non-zero parameters, size on
disk, CPU latency p50/p90 at batch 1 and 16 (stages timed interleaved), the task metric, and the deltas
against the original. Written as compression_report.json and compression_report.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..latency import batches_of, measure_latency
from ..run import write_json_atomic, write_text_atomic
from .quantization import is_torchao_tensor


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting the int8 weights inside quantized modules too."""
    from torch.ao.nn.quantized import Embedding as QEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    total = nonzero = 0
    seen = set()
    for module in model.modules():
        tensors = []
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


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and "token" not in p.name
               and p.name not in ("vocab.txt", "special_tokens_map.json"))


def sorted_batches(tokenizer, texts: list[str], labels: list[int], batch_size: int = 16):
    """Length-sorted batches for accuracy: little padding, to which dynamically quantized activations are
    sensitive (their scale is taken over the whole padded batch). Returns (batches, labels in batch order)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches = [dict(tokenizer([texts[j] for j in order[i: i + batch_size]], padding=True, truncation=True,
                              max_length=128, return_tensors="pt")) for i in range(0, len(order), batch_size)]
    return batches, [labels[j] for j in order]


@torch.inference_mode()
def accuracy(model: nn.Module, batches: list[dict], labels: list[int]) -> float:
    predictions = []
    for batch in batches:
        predictions += model(**batch).logits.argmax(-1).tolist()
    return float(np.mean(np.array(predictions) == np.array(labels)))


def build_report(stages: dict[str, nn.Module], saved: dict[str, Path], tokenizer, texts: list[str],
                 labels: list[int], repeats: int = 20) -> dict:
    """Measure every stage (the first is the original) and the deltas of each against the original."""
    eval_batches, labels = sorted_batches(tokenizer, texts, labels)
    rows = {}
    for name, model in stages.items():
        parameters, nonzero = count_parameters(model)
        rows[name] = {"parameters": parameters, "nonzero_parameters": nonzero, "size_bytes": folder_size(saved[name]),
                      "accuracy": accuracy(model.eval(), eval_batches, labels)}
    for batch_size in (1, 16):
        latency = measure_latency(stages, batches_of(tokenizer, texts, batch_size), repeats=repeats)
        for name, figures in latency.items():
            rows[name][f"latency_b{batch_size}_p50_ms"] = figures["p50_ms"]
            rows[name][f"latency_b{batch_size}_p90_ms"] = figures["p90_ms"]
            rows[name]["threads"] = figures["threads"]
    original = rows[next(iter(rows))]
    for row in rows.values():
        row["delta_accuracy"] = row["accuracy"] - original["accuracy"]
        row["size_reduction"] = original["size_bytes"] / row["size_bytes"]
        row["speedup_b1"] = original["latency_b1_p50_ms"] / row["latency_b1_p50_ms"]
        row["speedup_b16"] = original["latency_b16_p50_ms"] / row["latency_b16_p50_ms"]
    return {"stages": rows, "eval_examples": len(labels)}


def write_report(report: dict, output_dir: Path) -> None:
    """compression_report.json and a Markdown table, compression_report.md, written atomically."""
    write_json_atomic(Path(output_dir) / "compression_report.json", report)
    header = ("| stage | parameters | non-zero | size MB | accuracy | Δ accuracy | b1 p50 ms | b1 p90 ms | "
              "b16 p50 ms | b16 p90 ms | size × | speed-up b1 | speed-up b16 |")
    lines = [f"# Compression report ({report['eval_examples']} eval examples)", "", header,
             "|" + "---|" * (header.count("|") - 1)]
    for name, r in report["stages"].items():
        lines.append(f"| {name} | {r['parameters']:,} | {r['nonzero_parameters']:,} | {r['size_bytes'] / 1e6:.2f} | "
                     f"{r['accuracy']:.4f} | {r['delta_accuracy']:+.4f} | {r['latency_b1_p50_ms']:.2f} | "
                     f"{r['latency_b1_p90_ms']:.2f} | {r['latency_b16_p50_ms']:.2f} | {r['latency_b16_p90_ms']:.2f} | "
                     f"{r['size_reduction']:.2f} | {r['speedup_b1']:.2f} | {r['speedup_b16']:.2f} |")
    lines.append("")
    lines.append(f"Latency with {next(iter(report['stages'].values()))['threads']} CPU threads, stages run interleaved.")
    write_text_atomic(Path(output_dir) / "compression_report.md", "\n".join(lines) + "\n")
