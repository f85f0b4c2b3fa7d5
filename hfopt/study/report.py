"""The study report: every run measured the same way (from what the recipes record: all_results.json,
run_info.json, trainer_state.json), one row per run (study.csv, study.json), one row per variant with mean ±
std over seeds and the change against the baseline, marked when it is within noise (study.md), and plots: the
metric against training time with its Pareto front, the curves of all variants, speed and memory.

Example::

    rows = collect_runs(study, records, Path("outputs/study"))
    write_report(study, rows, Path("outputs/study"))
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

from ..run import write_json_atomic, write_text_atomic
from .runner import RunRecord
from .spec import Study

__all__ = ["COLUMNS", "collect_runs", "summarize", "write_report"]

# The measures of every run, in the order of the tables.
COLUMNS = (
    "wall_seconds",
    "train_runtime",
    "train_samples_per_second",
    "train_tokens_per_second",
    "peak_memory_mb",
    "parameters",
    "trainable_parameters",
    "model_size_mb",
    "latency_b1_p50_ms",
    "latency_b16_p50_ms",
)
WEIGHT_FILES = ("model*.safetensors", "adapter_model.safetensors", "pytorch_model*.bin")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def collect_runs(study: Study, records: dict[str, RunRecord], root: Path) -> list[dict[str, Any]]:
    """One row per run: the study's measures, the last and best value of every eval metric (and the step of
    the best headline metric), test metrics, and the compressed model's figures when the study compresses."""
    rows = []
    for run in study.runs(root):
        record = records.get(run.name, RunRecord(run.variant, run.seed))
        results, info = _read(run.output_dir / "all_results.json"), _read(run.output_dir / "run_info.json")
        history = _read(run.output_dir / "trainer_state.json").get("log_history", [])
        row: dict[str, Any] = {
            "variant": run.variant,
            "seed": run.seed,
            "status": record.status,
            "error": record.error,
            "wall_seconds": record.wall_seconds or info.get("wall_time_seconds"),
        }
        for key in (
            "train_runtime",
            "train_samples_per_second",
            "train_tokens_per_second",
            "latency_b1_p50_ms",
            "latency_b16_p50_ms",
        ):
            row[key] = results.get(key)
        for key in ("peak_memory_mb", "parameters", "trainable_parameters"):
            row[key] = info.get(key)
        weights = [p for pattern in WEIGHT_FILES for p in run.output_dir.glob(pattern)]
        row["model_size_mb"] = sum(p.stat().st_size for p in weights) / 1e6 if weights else None
        for key, value in results.items():
            if key.startswith(("eval_", "test_")) and not key.startswith("eval_before") and isinstance(value, float):
                if not key.endswith(("_runtime", "_per_second")):
                    row[key] = value
        evals = [(r["step"], r[study.metric]) for r in history if study.metric in r]
        if evals:
            pick = max if study.greater_is_better else min
            best_step, best = pick(evals, key=lambda item: item[1])
            row[f"best_{study.metric}"], row["steps_to_best"] = best, best_step
        if study.compress:
            report = _read(root / "compressed" / run.variant / f"seed-{run.seed}" / "compression_report.json")
            if report:
                final = list(report["stages"].values())[-1]
                row[f"compressed_{report['metric']}"] = final.get(report["metric"])
                row["compressed_size_mb"] = final["size_bytes"] / 1e6
                row["compressed_latency_b1_p50_ms"] = final["latency_b1_p50_ms"]
                row["compressed_latency_b16_p50_ms"] = final["latency_b16_p50_ms"]
        rows.append(row)
    return rows


def _numbers(rows: list[dict], key: str) -> list[float]:
    return [
        r[key]
        for r in rows
        if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) and math.isfinite(r[key])
    ]


def summarize(study: Study, rows: list[dict]) -> dict[str, dict[str, Any]]:
    """Per variant: mean and std (over the seeds that finished) of every numeric column, the change of the mean
    against the baseline's, and whether that change is within noise (|Δ| < 2 × the pooled std of the two)."""
    numeric = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("seed",) and _numbers(rows, k)]
    summary: dict[str, dict[str, Any]] = {}
    for variant in study.variants:
        done = [r for r in rows if r["variant"] == variant.name and r["status"] == "complete"]
        stats: dict[str, Any] = {
            "runs": len(done),
            "failed": sum(1 for r in rows if r["variant"] == variant.name and r["status"] == "failed"),
        }
        for key in numeric:
            values = _numbers(done, key)
            if values:
                stats[key] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "n": len(values),
                }
        summary[variant.name] = stats
    base = summary.get(study.baseline, {})
    for stats in summary.values():
        for key, value in list(stats.items()):
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                delta = value["mean"] - base[key]["mean"]
                pooled = math.sqrt((value["std"] ** 2 + base[key]["std"] ** 2) / 2)
                value["delta"] = delta
                value["within_noise"] = (abs(delta) < 2 * pooled) if value["n"] > 1 and base[key]["n"] > 1 else None
    return summary


def _cell(stats: dict, key: str, digits: int = 4) -> str:
    value = stats.get(key)
    if not isinstance(value, dict):
        return "–"
    text = f"{value['mean']:.{digits}f}" + (f" ± {value['std']:.{digits}f}" if value["n"] > 1 else "")
    return text


def _delta(stats: dict, key: str, digits: int = 4) -> str:
    value = stats.get(key)
    if not isinstance(value, dict) or "delta" not in value:
        return "–"
    mark = {True: " (noise)", False: "", None: ""}[value["within_noise"]]
    return f"{value['delta']:+.{digits}f}{mark}"


def write_report(study: Study, rows: list[dict], root: Path, machine: dict | None = None) -> dict:
    """study.json, study.csv (one row per run) and study.md (one row per variant, and the plots) in `root`."""
    summary = summarize(study, rows)
    metric = study.metric
    payload = {
        "study": study.name,
        "recipe": study.recipe_name,
        "metric": metric,
        "greater_is_better": study.greater_is_better,
        "baseline": study.baseline,
        "seeds": study.seeds,
        "machine": machine or {},
        "runs": rows,
        "variants": summary,
    }
    write_json_atomic(root / "study.json", payload)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(root / "study.csv", buffer.getvalue())
    plots = write_plots(study, rows, summary, root)

    header = [
        "variant",
        metric,
        f"Δ {metric}",
        "train s",
        "Δ train s",
        "samples/s",
        "tokens/s",
        "peak MB",
        "trainable params",
        "size MB",
        "b1 ms",
        "b16 ms",
        "runs",
    ]
    lines = [
        f"# Study: {study.name}",
        "",
        study.description
        or f"Recipe `{study.recipe_name}`, seeds {', '.join(map(str, study.seeds))}, baseline `{study.baseline}`.",
        "",
        f"Mean ± std over seeds; Δ against `{study.baseline}`; '(noise)' marks a change smaller than twice the "
        f"pooled std of the two variants. {'Higher' if study.greater_is_better else 'Lower'} {metric} is better.",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    for variant in study.variants:
        s = summary[variant.name]
        cells = [
            variant.name,
            _cell(s, metric),
            _delta(s, metric),
            _cell(s, "train_runtime", 1),
            _delta(s, "train_runtime", 1),
            _cell(s, "train_samples_per_second", 1),
            _cell(s, "train_tokens_per_second", 0),
            _cell(s, "peak_memory_mb", 0),
            _cell(s, "trainable_parameters", 0),
            _cell(s, "model_size_mb", 1),
            _cell(s, "latency_b1_p50_ms", 2),
            _cell(s, "latency_b16_p50_ms", 2),
            f"{s['runs']}" + (f" ({s['failed']} failed)" if s["failed"] else ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "Failed runs:", ""] + [f"- `{r['variant']}` seed {r['seed']}: {r['error']}" for r in failed]
    if machine:
        lines += ["", f"Machine: {machine.get('model', '?')}, {machine.get('physical_cores', '?')} cores."]
    lines += [""] + [f"![{name}]({path.relative_to(root)})" for name, path in plots.items()]
    write_text_atomic(root / "study.md", "\n".join(lines) + "\n")
    return payload


def _pareto(points: list[tuple[float, float, str]], higher: bool) -> list[tuple[float, float, str]]:
    """The points no other point beats in both time (lower) and metric."""
    front = []
    for t, m, name in sorted(points, key=lambda p: (p[0], -p[1] if higher else p[1])):
        if not front or (m > front[-1][1] if higher else m < front[-1][1]):
            front.append((t, m, name))
    return front


def write_plots(study: Study, rows: list[dict], summary: dict, root: Path) -> dict[str, Path]:
    """The PNGs of the report (headless matplotlib); none without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    folder = root / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    metric = study.metric

    points = [
        (s["train_runtime"]["mean"], s[metric]["mean"], name)
        for name, s in summary.items()
        if isinstance(s.get("train_runtime"), dict) and isinstance(s.get(metric), dict)
    ]
    if points:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, s in summary.items():
            if isinstance(s.get("train_runtime"), dict) and isinstance(s.get(metric), dict):
                ax.errorbar(
                    s["train_runtime"]["mean"],
                    s[metric]["mean"],
                    xerr=s["train_runtime"]["std"],
                    yerr=s[metric]["std"],
                    fmt="o",
                    capsize=3,
                )
                ax.annotate(
                    name,
                    (s["train_runtime"]["mean"], s[metric]["mean"]),
                    fontsize=8,
                    xytext=(4, 4),
                    textcoords="offset points",
                )
        front = _pareto(points, study.greater_is_better)
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="tab:red", label="Pareto front")
        ax.set_xlabel("training time (s)")
        ax.set_ylabel(metric)
        ax.legend(loc="best", fontsize=8)
        ax.set_title(f"{study.name}: {metric} against training time")
        fig.tight_layout()
        paths["metric against training time"] = folder / "metric_vs_time.png"
        fig.savefig(paths["metric against training time"], dpi=120)
        plt.close(fig)

    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn = False
    for variant in study.variants:
        run_dir = root / "runs" / variant.name / f"seed-{study.seeds[0]}"
        history = _read(run_dir / "trainer_state.json").get("log_history", [])
        losses = [(r["step"], r["loss"]) for r in history if "loss" in r]
        evals = [(r["step"], r[metric]) for r in history if metric in r]
        if losses:
            loss_ax.plot(*zip(*losses, strict=True), label=variant.name, linewidth=1)
            drawn = True
        if evals:
            metric_ax.plot(*zip(*evals, strict=True), marker="o", markersize=3, label=variant.name, linewidth=1)
    if drawn:
        loss_ax.set(xlabel="step", ylabel="training loss", title=f"training loss (seed {study.seeds[0]})")
        metric_ax.set(xlabel="step", ylabel=metric, title=f"{metric} (seed {study.seeds[0]})")
        metric_ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        paths["curves"] = folder / "curves.png"
        fig.savefig(paths["curves"], dpi=120)
    plt.close(fig)

    names = [n for n, s in summary.items() if isinstance(s.get("train_samples_per_second"), dict)]
    if names:
        fig, (speed_ax, memory_ax) = plt.subplots(1, 2, figsize=(11, 4))
        speed = [summary[n]["train_samples_per_second"]["mean"] for n in names]
        memory = [summary[n].get("peak_memory_mb", {}).get("mean", 0) for n in names]
        speed_ax.barh(names, speed, color="tab:blue")
        speed_ax.set(xlabel="training samples/s", title="speed")
        memory_ax.barh(names, memory, color="tab:orange")
        memory_ax.set(xlabel="peak memory (MB)", title="memory")
        fig.tight_layout()
        paths["speed and memory"] = folder / "speed_memory.png"
        fig.savefig(paths["speed and memory"], dpi=120)
        plt.close(fig)
    return paths
