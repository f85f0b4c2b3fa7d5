"""What `hfopt optimize` writes: every trial (trials.csv, trials.json), the Pareto front and the choice
(optimize.md, optimize.png), and the chosen model with its report on the eval file (OUT/model), or, when no trial
met the budget, the closest one (OUT/closest_model).

Example::

    write_trials(rows, Path("out"))
    front = pareto_front(rows, "pareto")
"""

from __future__ import annotations

import csv
import io
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..pipeline.config import TRAINING_STAGES, without_idle_settings
from ..run import folder_swap, save_figure_atomic, write_text_atomic

logger = logging.getLogger(__name__)

__all__ = ["CANDIDATES", "OptimizeResult", "better", "describe", "finish", "pareto_front", "write_trials"]

CANDIDATES = {"best": ".best", "closest": ".closest"}  # the kept models, while the search runs
TRIAL_FILE = "optimize_trial.json"  # in a kept model's folder: its trial's row

RATIO = {"latency_b1": "speedup_b1", "latency_b16": "speedup_b16", "size": "size_reduction"}


@dataclass
class OptimizeResult:
    """What `optimize` found: the chosen trial's row (None when nothing met the budget), the closest one, every
    trial's row, the final report on the eval file, the original's metric on the selection data, the files."""

    chosen: dict | None
    closest: dict | None
    trials: list[dict]
    report: dict | None
    original_metric: float  # the original's headline metric on the selection data
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        return self.chosen is not None


COLUMNS = ("trial", "status", "settings", "metric", "loss", "loss_se", "speedup_b1", "speedup_b16", "size_reduction",
           "latency_b1_ms", "latency_b16_ms", "size_bytes", "screen_metric", "same_as", "seconds", "error")  # fmt: skip


def score(row: dict, objective: str) -> float:
    """How good a trial is for the objective (higher is better): its speed-up or size reduction, or for pareto
    the geometric mean of the three."""
    if objective == "pareto":
        return math.prod(row[k] for k in RATIO.values()) ** (1 / 3)
    return row[RATIO[objective]]


def better(row: dict, current: dict, config, slot: str) -> bool:
    """Whether `row` replaces `current` in its slot: "best" (within the budget) by the objective, then the loss;
    "closest" (none within) by the loss."""
    if slot == "closest":
        return row["loss"] < current["loss"]
    ours, theirs = score(row, config.objective), score(current, config.objective)
    return ours > theirs or (ours == theirs and row["loss"] < current["loss"])


def pareto_front(rows: list[dict], objective: str) -> list[dict]:
    """The complete trials no other complete trial beats on the loss and every objective ratio at once (one row
    per model: repeats of a model are left out)."""
    keys = list(RATIO.values()) if objective == "pareto" else [RATIO[objective]]
    done = [r for r in rows if r.get("status") == "complete" and r.get("same_as") is None]

    def dominates(a, b):
        at_least = a["loss"] <= b["loss"] and all(a[k] >= b[k] for k in keys)
        return at_least and (a["loss"] < b["loss"] or any(a[k] > b[k] for k in keys))

    front = [r for r in done if not any(dominates(o, r) for o in done if o is not r)]
    return sorted(front, key=lambda r: -score(r, objective))


def describe(params: dict) -> str:
    """A trial's settings in a few words: "student 3 · heads 0.25 · ffn 0.5 · recover distill · dynamic_int8"."""
    parts = []
    if isinstance(params.get("student_layers"), str):  # the teacher's blocks
        parts.append(f"student blocks {params['student_layers']}")
    elif params.get("student_layers"):
        parts.append(f"student {params['student_layers']}")
    if params.get("prune_vocabulary"):
        parts.append("vocabulary")
    qat = params.get("deployment") == "pytorch:qat"
    for name in ("prune_heads", "prune_ffn", "prune_magnitude"):
        if params.get(name) and not (qat and name == "prune_magnitude"):  # QAT would refill the zeros: not made
            parts.append(f"{name.split('_')[1]} {params[name]:g}")
    pruned = params.get("prune_vocabulary") or params.get("prune_heads") or params.get("prune_ffn")
    if pruned and params.get("recover", "none") != "none":
        parts.append(f"recover {params['recover']} {params.get('recover_epochs', 1):g} ep")
    deployment = params.get("deployment", "pytorch:none")
    parts.append(deployment.split(":", 1)[1] if deployment.startswith("pytorch:") else deployment)
    return " · ".join(p for p in parts if p != "none") or "original"


def write_trials(rows: list[dict], output: Path) -> None:
    """trials.json (every trial's row, whole) and trials.csv (one line each), written atomically."""
    from ..run import write_json_atomic

    write_json_atomic(output / "trials.json", rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "settings": describe(row.get("params", {}))})
    write_text_atomic(output / "trials.csv", buffer.getvalue())


def finish(rows: list[dict], setup, eval_task, config, output: Path, state: dict, space: dict):
    """Publish the chosen model (or the closest) with its report on the eval file; write optimize.md/.png."""
    best, closest = state.get("best"), state.get("closest")
    kept = best or closest
    report = None
    files: dict[str, Path] = {}
    if kept is not None:
        target = output / ("model" if best else "closest_model")
        report = _publish(setup, eval_task, config, output / CANDIDATES["best" if best else "closest"], target, kept)
        files["model" if best else "closest_model"] = target
    stale = output / ("closest_model" if best else "model")
    if stale.exists():  # an earlier search's result: OUT holds this search's only
        logger.warning("Removing %s: the result of an earlier search in this folder.", stale)
        shutil.rmtree(stale)
    margin = _margin_line(best, setup) if best else None
    if margin:
        logger.warning("Trial %d: %s", best["trial"], margin)
    front = pareto_front(rows, config.objective)
    write_text_atomic(output / "optimize.md", _markdown(rows, front, best, closest, setup, config, report, space,
                                                        margin))  # fmt: skip
    plot = _plot(rows, front, best, setup, config, output / "optimize.png")
    files.update({name: output / name for name in ("trials.csv", "trials.json", "optimize.md")})
    if plot:
        files["optimize.png"] = plot
    return OptimizeResult(best, closest, rows, report, setup.original_selection, files)


def _publish(setup, eval_task, config, folder: Path, target: Path, row: dict) -> dict:
    """Copy a kept trial's model to `target` with compression_report.{json,md} (the original and the model,
    timed interleaved, scored on the eval file) and pipeline.yaml (`hfopt compress --config` remakes it, copying the
    search's trained stages from its stages/ folder while that folder is there)."""
    import yaml

    from ..compression.io import load_compressed
    from ..compression.onnx import EXPORT_RECORD, load_onnx
    from ..compression.report import build_report, weights_size, write_report

    onnx = (folder / EXPORT_RECORD).is_file()
    model = load_onnx(folder, threads=setup.threads, spinning=False) if onnx else load_compressed(folder).cpu().eval()
    name = f"trial {row['trial']}"
    report = build_report({"original": setup.original, name: model},
                          {"original": setup.original_size, name: weights_size(folder)}, eval_task,
                          repeats=setup.repeats)  # fmt: skip
    report["optimize"] = {"trial": row["trial"], "settings": describe(row["params"]), "status": row["status"],
                          "selection_metric": row.get("metric", row.get("screen_metric")),
                          "selection_loss": row["loss"], "selection_loss_se": row.get("loss_se"),
                          "budget": setup.budget, "relative": setup.relative,
                          "objective": config.objective}  # fmt: skip
    values = {k: v for k, v in row["pipeline"].items() if v is not None}
    values = without_idle_settings(values)  # a row of an earlier version may hold them; hfopt compress refuses them
    values.update(eval_file=config.eval_file)
    if any(name in TRAINING_STAGES for name in row.get("stages", {})):  # the stages the trial's model was made of
        values["stage_cache"] = str(setup.cache.folder)  # its trained stages are copied, not trained again
    local = ("_file", "prune_vocabulary", "teacher", "tokenizer_name", "stage_cache")
    for key, value in values.items():  # local files and folders by absolute path: the YAML works from any folder
        if isinstance(value, str) and key.endswith(local):
            if Path(value).exists():
                values[key] = str(Path(value).resolve())
    with folder_swap(target) as staging:
        for item in folder.iterdir():
            if item.name == TRIAL_FILE:
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)
        write_report(report, staging)
        write_text_atomic(staging / "pipeline.yaml",
                          "# hfopt compress MODEL_DIR --output_dir OUT --config pipeline.yaml remakes this model\n"
                          "# (stage_cache: the search's trained stages, copied instead of trained; without that\n"
                          "# folder, drop the line and they train again)\n"
                          + yaml.safe_dump(values, sort_keys=False))  # fmt: skip
    return report


def _markdown(rows, front, best, closest, setup, config, report, space, margin: str | None) -> str:
    budget = f"{setup.budget:.1%} of the original's {setup.headline}" if setup.relative else f"{setup.budget:g}"
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("complete", "screened out", "failed")}
    repeats = sum(r.get("same_as") is not None for r in rows)
    lines = [
        f"# hfopt optimize: {setup.task_name}, objective {config.objective}, budget: {setup.headline} may drop by "
        f"{budget}",
        "",
        f"Original {setup.headline} on the selection data: {setup.original_selection:.4f}. {len(rows)} trials: "
        f"{counts['complete']} complete ({repeats} repeating an earlier model), {counts['screened out']} screened "
        f"out on the first part of the selection data, {counts['failed']} failed.",
        "",
    ]
    chosen = best or closest
    if chosen is not None:
        eval_row = next(r for n, r in report["stages"].items() if n != "original")
        original = report["stages"]["original"]
        what = "Chosen" if best else "No trial met the budget; the closest"
        lines += [
            f"**{what}: trial {chosen['trial']}** ({describe(chosen['params'])}), in "
            f"`{'model' if best else 'closest_model'}/`. On the eval file the search never saw: {setup.headline} "
            f"{eval_row[setup.headline]:.4f} (original {original[setup.headline]:.4f}), {eval_row['speedup_b1']:.2f}× "
            f"faster at batch 1, {eval_row['speedup_b16']:.2f}× at batch 16, {eval_row['size_reduction']:.1f}× "
            "smaller.",
            "",
        ]
        if margin:
            lines += [margin, ""]
    loss_header = "loss (± SE)" if any(r.get("loss_se") is not None for r in front) else "loss"
    lines += [
        "Pareto front (selection data; a trial that no other beats on the loss and the objective at once):",
        "",
        f"| trial | settings | {setup.headline} | {loss_header} | within budget | × faster b1 | × faster b16 "
        "| × smaller |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in front:
        lines.append(
            f"| {r['trial']} | {describe(r['params'])} | {r['metric']:.4f} | {_loss_cell(r)} | "
            f"{'yes' if r['constraint'] <= 0 else 'no'} | {r['speedup_b1']:.2f} | {r['speedup_b16']:.2f} | "
            f"{r['size_reduction']:.2f} |"
        )
    lines += ["", "Search space: " + "; ".join(f"{k} {v}" for k, v in space.items()), "",
              "Every trial: trials.csv / trials.json. The plot: optimize.png."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _loss_cell(row: dict) -> str:
    """A trial's loss, with its standard error where the metric has one."""
    error = row.get("loss_se")
    return f"{row['loss']:+.4f}" + (f" ± {error:.4f}" if error is not None else "")


def _margin_line(row: dict, setup) -> str | None:
    """What the chosen trial's standard error says about the budget on data the search did not see."""
    error = row.get("loss_se")
    if error is None:
        return None
    if row["loss"] + error > setup.budget:
        return (f"Its loss on the selection data, {row['loss']:+.4f} ± {error:.4f}, is within one standard error "
                "of the budget: on other data it may lose more than the budget (a smaller max_drop leaves a "
                "margin).")  # fmt: skip
    return None


def _plot(rows, front, best, setup, config, path: Path) -> Path | None:
    """optimize.png: the metric against the objective's ratio for every complete trial, the front joined, the
    budget line and the chosen trial marked. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no optimize.png")
        return None
    key = RATIO.get(config.objective, "speedup_b16")
    done = [r for r in rows if r.get("status") == "complete"]
    figure, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([r[key] for r in done], [r["metric"] for r in done], s=18, color="0.6", label="trials")
    line = sorted((r for r in front), key=lambda r: r[key])
    ax.plot([r[key] for r in line], [r["metric"] for r in line], "o-", color="C0", label="Pareto front")
    allowed = setup.budget * abs(setup.original_selection) if setup.relative else setup.budget
    limit = setup.original_selection - allowed if setup.higher_is_better else setup.original_selection + allowed
    ax.axhline(limit, color="C3", linestyle="--", label="budget")
    ax.scatter([1.0], [setup.original_selection], marker="*", s=160, color="k", label="original")
    if best:
        label = f"chosen (trial {best['trial']})"
        ax.scatter([best[key]], [best["metric"]], marker="*", s=220, color="C2", label=label)
    ax.set_xlabel(key.replace("_", " ") + " (× the original)")
    ax.set_ylabel(f"{setup.headline} (selection data)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure_atomic(figure, path)
