"""The pipeline's report: every stage (and each `compare` folder) measured in one interleaved report, with the
wall time each stage took to make and the training stages' figures; Markdown, JSON and one plot.

Example::

    report = pipeline_report(ctx, models, folders, records, eval_task, eval_fp, output)
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import InputError
from ..run import save_figure_atomic, write_json_atomic
from .source import load_source
from .stages import STAGE_FILE

logger = logging.getLogger(__name__)

__all__ = ["pipeline_report"]


def pipeline_report(ctx, models: dict, folders: dict[str, Path], records: dict[str, dict], eval_task, eval_fp: str,
                    output: Path) -> dict:  # fmt: skip
    """Measure `models` ({row: model}, stage order) and the config's `compare` folders; write
    compression_report.{json,md,png} into `output`. Task metrics of a stage measured before on the same eval data
    (recorded in its stage.json) are not measured again; latency always is, all rows interleaved."""
    from ..compression.report import build_report, weights_size, write_report

    config = ctx.config
    sizes = {label: weights_size(folder) for label, folder in folders.items()}
    known = {}
    for label, record in records.items():
        evaluation = record.get("evaluation", {}).get(label, {})
        if evaluation.get("fingerprint") == eval_fp:
            known[label] = evaluation["metrics"]
    for item in config.compare:
        name, folder = item.split("=", 1)
        other, other_tokenizer, _ = load_source(folder, ctx.task_name, config.tokenizer_name)
        if other_tokenizer.get_vocab() != ctx.tokenizer.get_vocab():
            raise InputError(
                f"compare {name}={folder}: its tokenizer differs from {ctx.model_dir}'s, and every stage of the "
                "report is scored on the same token ids; compare models that share a tokenizer"
            )
        models[name], sizes[name] = other, weights_size(folder)
    report = build_report(models, sizes, eval_task, repeats=config.latency_repeats, known=known)
    metric_keys = report["metrics"]
    for label, record in records.items():
        row = report["stages"][label]
        row["seconds"] = record.get("seconds")
        if record.get("training"):
            row["training"] = record["training"]
        if label not in known:  # keep the metrics with the stage: a rerun that changes later stages reuses them
            evaluation = dict(record.get("evaluation", {}))
            evaluation[label] = {"fingerprint": eval_fp, "metrics": {k: row[k] for k in metric_keys}}
            record["evaluation"] = evaluation
            write_json_atomic(folders[label].parent / STAGE_FILE if label.startswith("onnx") else
                              folders[label] / STAGE_FILE, record)  # fmt: skip
    onnx_rows = [label for label, folder in folders.items() if folder.parent.name.endswith("_onnx")]
    if onnx_rows:
        float_stage = records[onnx_rows[0]].get("exported_from") or _last_float(records, folders)
        section = report_section({n: models[n] for n in onnx_rows}, float_stage, output / "onnx",
                                 records[onnx_rows[0]].get("calibration"))  # fmt: skip
        report["onnx"] = section
        report["notes"] = [section["note"]]
    report["chain"] = [
        name if name == "prune_vocabulary" else f"{name}={_value(config, name)}" for name in config.stage_names()
    ]
    vocabulary = next((r["vocabulary"] for r in records.values() if r.get("vocabulary")), None)
    if vocabulary:
        report["vocabulary"] = {k: v for k, v in vocabulary.items() if k != "vocabulary"} | {
            "of": vocabulary["vocabulary"]
        }
    report["model_dir"] = str(ctx.model_dir)
    write_report(report, output)
    plot_report(report, output / "compression_report.png")
    return report


def _value(config, name: str):
    return {"student": config.student_layers, "onnx": config.onnx}.get(name, getattr(config, name, None))


def _last_float(records: dict[str, dict], folders: dict[str, Path]) -> str:
    floats = [label for label, r in records.items() if r.get("stage") not in ("quantize", "qat", "onnx")]
    return floats[-1] if floats else "original"


def plot_report(report: dict, path: Path) -> Path | None:
    """compression_report.png: the headline metric against latency (p50) at batch 1 and 16, every stage a
    labelled point, the original a star. None (and nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no compression_report.png")
        return None
    metric = report["metric"]
    rows = report["stages"]
    original = next(iter(rows))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, batch in zip(axes, (1, 16), strict=True):
        for name, row in rows.items():
            x, y = row.get(f"latency_b{batch}_p50_ms"), row.get(metric)
            if x is None or y is None:
                continue
            ax.scatter([x], [y], marker="*" if name == original else "o", s=140 if name == original else 40)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(f"latency at batch {batch}, p50 (ms)")
        ax.set_ylabel(metric)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    figure.suptitle(f"Compression report: {report['task']} ({'higher' if report['higher_is_better'] else 'lower'} "
                    f"{metric} is better; ★ the original)")  # fmt: skip
    return save_figure_atomic(figure, path)


def report_section(models: dict, exported_from: str, folder, calibration: str | None) -> dict:
    """The compression report's `onnx` entry: where the ONNX stages come from and lie, their calibration, each
    one's export record, and a note on how they were timed."""
    return {
        "exported_from": exported_from,
        "folder": str(folder),
        "calibration": calibration,
        "stages": {name: stage_record(model) for name, model in models.items()},
        "note": f"ONNX stages: exported from {exported_from}, in {folder}; ONNX Runtime with the same threads, one "
        "inter-op thread, and spinning threads off (ONNX Runtime's default is on, which is faster at batch 1 for a "
        "process that runs only that model, but takes the CPU from the stages timed between its runs).",
    }


def stage_record(model) -> dict:
    """What the compression report records of an ONNX stage: exporter, opset, fusions, the parity of the float
    graph (the stage's own, or the one it was quantized from) and the quantization."""
    record = model.record
    return {
        "exporter": record["exporter"],
        "opset": record["opset"],
        "fusions": record["fusions"],
        "float_graph_parity": record["parity"],
        "quantization": record["quantization"],
    }
