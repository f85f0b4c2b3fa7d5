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
import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any

from ..run import write_json_atomic, write_text_atomic
from .runner import RunRecord, is_complete
from .spec import Study

__all__ = ["COLUMNS", "collect_runs", "metric_time_figure", "write_report"]

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
    spans = _spans(study, records, root)
    for run in study.runs(root):
        record = records.get(run.name, RunRecord(run.variant, run.seed))
        results, info = _read(run.output_dir / "all_results.json"), _read(run.output_dir / "run_info.json")
        history = _read(run.output_dir / "trainer_state.json").get("log_history", [])
        row: dict[str, Any] = {
            "variant": run.variant,
            "seed": run.seed,
            # a run that finished while no `hfopt compare` waited (a Slurm task) is complete whatever its record says
            "status": "complete" if record.status != "complete" and is_complete(run.output_dir) else record.status,
            "error": record.error,
            "wall_seconds": record.wall_seconds or info.get("wall_time_seconds"),
        }
        last = record.attempts[-1] if record.attempts else {}
        row["host"] = last.get("host") or info.get("host")
        row["torch_threads"] = info.get("torch_threads")
        row["gpus"] = ",".join(last["gpus"]) if last.get("gpus") else info.get("cuda_visible_devices")
        row["start"], row["end"] = spans.get(run.name, (None, None))
        row["concurrent_with"] = " ".join(
            other
            for other, (start, end) in spans.items()
            if other != run.name and _overlap(spans.get(run.name), (start, end))
        )
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


def _spans(study: Study, records: dict[str, RunRecord], root: Path) -> dict[str, tuple[float, float]]:
    """(start, end) of each run's last attempt, where the study recorded them."""
    spans = {}
    for run in study.runs(root):
        record = records.get(run.name)
        last = record.attempts[-1] if record and record.attempts else {}
        if "start" in last and "end" in last:
            spans[run.name] = (last["start"], last["end"])
    return spans


def _overlap(a: tuple[float, float] | None, b: tuple[float, float]) -> bool:
    return a is not None and a[0] < b[1] and b[0] < a[1]


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
            "failed": sum(1 for r in rows if r["variant"] == variant.name and r["status"] in ("failed", "killed")),
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


def _delta(stats: dict, key: str, digits: int = 4, mark_single: bool = False) -> str:
    value = stats.get(key)
    if not isinstance(value, dict) or "delta" not in value:
        return "–"
    mark = {True: " (noise)", False: "", None: " (n=1)" if mark_single else ""}[value["within_noise"]]
    return f"{value['delta']:+.{digits}f}{mark}"


def _notes(study: Study, rows: list[dict], summary: dict) -> list[str]:
    """What a reader must know to read the table right: a one-seed study has no noise estimate, a headline
    metric no run recorded, a baseline with no finished run."""
    notes = []
    if len(study.seeds) == 1:
        notes.append(
            "One seed per variant: each Δ is the difference of two single runs, with no noise estimate; a change "
            "may be noise. Run two or more seeds to tell."
        )
    done = [r for r in rows if r["status"] == "complete"]
    if done and not any(study.metric in r for r in done):
        found = sorted({k for r in done for k in r if k.startswith(("eval_", "test_"))})
        notes.append(
            f"No finished run recorded {study.metric}, the study's metric; they recorded: "
            f"{', '.join(found) or 'no eval metric'}. Set `metric:` in the study file to one of them."
        )
    shared = [r for r in rows if r.get("concurrent_with")]
    if shared and done:
        events = sorted([(r["start"], 1) for r in shared] + [(r["end"], -1) for r in shared])
        at_once = max(itertools.accumulate(step for _, step in events))  # ends sort before starts at a tie
        hosts = sorted({r["host"] for r in rows if r.get("host")})
        base = _numbers([r for r in done if r["variant"] == study.baseline], "train_runtime")
        spread = statistics.stdev(base) / statistics.fmean(base) if len(base) > 1 and statistics.fmean(base) else 0
        threshold = max(10, round(200 * spread))
        notes.append(
            f"Runs shared the machine: up to {at_once} ran at once on {', '.join(hosts) or 'this host'} (which ran "
            f"beside which: `concurrent_with` in study.csv), each on its share of the cores or GPUs; they still "
            f"shared memory bandwidth and caches, so a difference in time, throughput or latency under "
            f"{threshold}% is not evidence (twice the spread of the baseline's training time over seeds, at least "
            "10%). Metrics change only as far as fewer threads per run reorder floating-point sums."
        )
    if not done:
        notes.append("No run finished: there is nothing to compare.")
    elif not summary.get(study.baseline, {}).get("runs"):
        notes.append(f"The baseline `{study.baseline}` has no finished run: no Δ can be computed.")
    return notes


def write_report(study: Study, rows: list[dict], root: Path, machine: dict | None = None) -> dict:
    """study.json, study.csv (one row per run) and study.md (one row per variant, and the plots) in `root`."""
    summary = summarize(study, rows)
    metric = study.metric
    notes = _notes(study, rows, summary)
    payload = {
        "study": study.name,
        "notes": notes,
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
    plot_notes: list[str] = []
    plots = write_plots(study, rows, summary, root, plot_notes)
    several = len(study.seeds) > 1

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
        "pooled std of the two variants"
        + ("; '(n=1)' one with a single finished run on a side, which has no noise estimate. " if several else ". ")
        + f"{'Higher' if study.greater_is_better else 'Lower'} {metric} is better.",
        "",
        *[f"**Note:** {note}\n" for note in notes],
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    for variant in study.variants:
        s = summary[variant.name]
        cells = [
            variant.name,
            _cell(s, metric),
            _delta(s, metric, mark_single=several),
            _cell(s, "train_runtime", 1),
            _delta(s, "train_runtime", 1, mark_single=several),
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
    failed = [r for r in rows if r["status"] in ("failed", "killed")]
    if failed:
        lines += ["", "Failed runs:", ""]
        lines += [f"- `{r['variant']}` seed {r['seed']}: {r['error']}" for r in failed]
    pending = [r for r in rows if r["status"] in ("pending", "submitted")]
    if pending:
        lines += ["", "Runs not run (the study stopped first):", ""]
        lines += [f"- `{r['variant']}` seed {r['seed']}" for r in pending]
    front = _pareto(_points(summary, metric), study.greater_is_better)
    if front:
        lines += [
            "",
            f"Pareto front of training time against {metric} (no other variant is both faster and better): "
            + ", ".join(f"`{name}`" for _, _, name in front)
            + ".",
        ]
    if machine:
        lines += ["", f"Machine: {machine.get('model', '?')}, {machine.get('physical_cores', '?')} cores."]
    lines += [""] + [f"![{name}]({path.relative_to(root)})" for name, path in plots.items()]
    lines += [f"\n{note}" for note in plot_notes]
    write_text_atomic(root / "study.md", "\n".join(lines) + "\n")
    return payload


def _points(summary: dict, metric: str) -> list[tuple[float, float, str]]:
    """(mean training time, mean metric, variant) of every variant with both."""
    return [
        (stats["train_runtime"]["mean"], stats[metric]["mean"], name)
        for name, stats in summary.items()
        if isinstance(stats.get("train_runtime"), dict) and isinstance(stats.get(metric), dict)
    ]


def _pareto(points: list[tuple[float, float, str]], higher: bool) -> list[tuple[float, float, str]]:
    """The points no other point beats in both time (lower) and metric, fastest first."""
    front = []
    for t, m, name in sorted(points, key=lambda p: (p[0], -p[1] if higher else p[1])):
        if not front or (m > front[-1][1] if higher else m < front[-1][1]):
            front.append((t, m, name))
    return front


# Where a label may go around its point: directions (degrees, right first, then up and down) at growing distances
# (points); the first place that overlaps no other label, no point and stays in the figure wins.
LABEL_ANGLES = (0, 30, -30, 60, -60, 90, -90, 120, -120, 150, -150, 180, 15, -15, 165, -165, 45, -45, 135, -135)
LABEL_RADII = (5, 12, 20, 30, 42, 56, 72, 90, 110, 132)


def place_labels(ax, points: list[tuple[float, float, str]], fontsize: float = 8) -> list:
    """Label each (x, y, name) point of `ax` so that no two labels overlap and no label covers a point: each
    label tries places around its point, nearest first, and takes the first free one (a thin leader line joins a
    label set further away to its point). Call it after the figure's layout is final (after `tight_layout`).
    Returns the labels (matplotlib Annotations).

    Example::

        fig.tight_layout()
        place_labels(ax, [(12.0, 0.91, "cosine"), (12.1, 0.91, "lora")])
    """
    import math

    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    bounds = fig.bbox
    centres = [ax.transData.transform((x, y)) for x, y, _ in points]
    dots = [(cx - 7, cy - 7, cx + 7, cy + 7) for cx, cy in centres]  # the marker and a ring around it
    taken: list[tuple[float, float, float, float]] = []

    def overlap(a, b) -> float:
        return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))

    labels = []
    order = sorted(range(len(points)), key=lambda i: (centres[i][1], centres[i][0]))
    for i in order:
        x, y, name = points[i]
        label = ax.annotate(
            name,
            (x, y),
            xytext=(0, 0),
            textcoords="offset points",
            fontsize=fontsize,
            bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.75},
            zorder=4,
        )
        best, best_cost = None, math.inf
        for radius in LABEL_RADII:
            for angle in LABEL_ANGLES:
                dx, dy = radius * math.cos(math.radians(angle)), radius * math.sin(math.radians(angle))
                label.set_position((dx, dy))
                label.set_horizontalalignment("left" if dx > 1e-6 else "right" if dx < -1e-6 else "center")
                label.set_verticalalignment("bottom" if dy > 1e-6 else "top" if dy < -1e-6 else "center")
                box = label.get_window_extent(renderer)
                box = (box.x0 - 1, box.y0 - 1, box.x1 + 1, box.y1 + 1)
                outside = box[0] < bounds.x0 or box[1] < bounds.y0 or box[2] > bounds.x1 or box[3] > bounds.y1
                cost = sum(overlap(box, other) for other in taken) + sum(overlap(box, dot) for dot in dots)
                cost += 1e6 if outside else 0
                if cost < best_cost:
                    best, best_cost = (
                        (dx, dy, box, label.get_horizontalalignment(), label.get_verticalalignment()),
                        cost,
                    )
                if cost == 0:
                    break
            if best_cost == 0:
                break
        dx, dy, box, ha, va = best
        label.set_position((dx, dy))
        label.set_horizontalalignment(ha)
        label.set_verticalalignment(va)
        taken.append(box)
        if math.hypot(dx, dy) > 14:
            ax.annotate(
                "",
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                arrowprops={"arrowstyle": "-", "color": "0.4", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 3},
            )
        labels.append(label)
    return labels


def metric_time_figure(study: Study, summary: dict):
    """The metric against training time: each variant's mean with its std as error bars, labelled so that no two
    labels overlap, and the Pareto front as a staircase through its variants (ringed). None without points."""
    import matplotlib.pyplot as plt

    metric = study.metric
    points = _points(summary, metric)
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for t, m, name in points:
        ax.errorbar(
            t,
            m,
            xerr=summary[name]["train_runtime"]["std"],
            yerr=summary[name][metric]["std"],
            fmt="o",
            markersize=4,
            capsize=2,
            color="tab:blue",
            ecolor="0.6",
            zorder=2,
        )
    front = _pareto(points, study.greater_is_better)
    ax.plot(
        [p[0] for p in front],
        [p[1] for p in front],
        drawstyle="steps-post",
        linestyle="--",
        color="tab:red",
        marker="o",
        markersize=9,
        markerfacecolor="none",
        markeredgewidth=1.5,
        label=f"Pareto front ({len(front)} of {len(points)})",
        zorder=3,
    )
    ax.set_xlabel("training time (s)")
    better = "higher" if study.greater_is_better else "lower"
    ax.set_ylabel(f"{metric} ({better} is better)")
    ax.margins(x=0.25, y=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{study.name}: {metric} against training time")
    fig.tight_layout()
    place_labels(ax, points)
    return fig


def _curve_run(study: Study, root: Path, variant: str) -> tuple[int, dict]:
    """(seed, trainer_state) of the variant's first run (in seed order) that logged anything, else of its first."""
    states = [(seed, _read(root / "runs" / variant / f"seed-{seed}" / "trainer_state.json")) for seed in study.seeds]
    return next(((seed, state) for seed, state in states if state.get("log_history")), states[0])


def write_plots(
    study: Study, rows: list[dict], summary: dict, root: Path, notes: list[str] | None = None
) -> dict[str, Path]:
    """The PNGs of the report (headless matplotlib); none without matplotlib. Appends to `notes` why a plot or
    part of one is missing."""
    notes = [] if notes is None else notes
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        notes.append("No plots: matplotlib is not installed (pip install matplotlib).")
        return {}
    folder = root / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    metric = study.metric

    fig = metric_time_figure(study, summary)
    if fig is not None:
        paths["metric against training time"] = folder / "metric_vs_time.png"
        fig.savefig(paths["metric against training time"], dpi=120)
        plt.close(fig)
    else:
        notes.append(f"No plot of {metric} against training time: no variant has a finished run with both.")

    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn_loss = drawn_metric = False
    short: list[str] = []  # runs that trained fewer steps than logging_steps
    seeds_used = set()
    for variant in study.variants:
        seed, state = _curve_run(study, root, variant.name)
        history = state.get("log_history", [])
        if not history:
            continue
        seeds_used.add(seed)
        label = variant.name if seed == study.seeds[0] else f"{variant.name} (seed {seed})"
        losses = [(r["step"], r["loss"]) for r in history if "loss" in r]
        evals = [(r["step"], r[metric]) for r in history if metric in r]
        if losses:
            loss_ax.plot(*zip(*losses, strict=True), marker="." if len(losses) < 3 else None, label=label, linewidth=1)
            drawn_loss = True
        elif isinstance(state.get("logging_steps"), int) and state.get("global_step", 0) < state["logging_steps"]:
            short.append(f"`{variant.name}` ({state['global_step']} steps, logging_steps {state['logging_steps']})")
        else:
            short.append(f"`{variant.name}` (no loss in its log history)")
        if evals:
            metric_ax.plot(*zip(*evals, strict=True), marker="o", markersize=3, label=label, linewidth=1)
            drawn_metric = True
    if drawn_loss or drawn_metric:
        seed_text = f"seed {study.seeds[0]}" if seeds_used == {study.seeds[0]} else "first finished seed"
        loss_ax.set(xlabel="step", ylabel="training loss", title=f"training loss ({seed_text})")
        metric_ax.set(xlabel="step", ylabel=metric, title=f"{metric} ({seed_text})")
        for ax, drawn, what in ((loss_ax, drawn_loss, "training loss"), (metric_ax, drawn_metric, metric)):
            if drawn:
                ax.legend(fontsize=7, ncol=2)
            else:
                ax.text(0.5, 0.5, f"no {what} logged", ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        paths["curves"] = folder / "curves.png"
        fig.savefig(paths["curves"], dpi=120)
    plt.close(fig)
    if short:
        notes.append(
            "No training-loss curve for "
            + ", ".join(short)
            + ": a run logs its loss every logging_steps steps, and one that trains fewer logs none; lower "
            "logging_steps to see one."
        )
    if not (drawn_loss or drawn_metric):
        notes.append(
            f"No curves plot: no run logged a training loss or {metric} (trainer_state.json holds no log history)."
        )
    elif not drawn_metric:
        notes.append(f"The curves plot has no {metric} curve: no run logged {metric} during training.")

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
