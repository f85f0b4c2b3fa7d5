"""`compress()`: the compression pipeline as one call. Each finished stage is kept in `output_dir/stages/` with
the fingerprint of everything that produced it, so a killed run resumes at its first unfinished stage, a changed
stage recomputes from there on and reuses everything before it, and an unchanged rerun only prints the report.

Example::

    result = compress("runs/teacher", CompressionConfig(eval_file="dev.tsv", quantize="dynamic_int8"), "out")
    result.report["stages"]["quantize_dynamic_int8"]["accuracy"], result.model
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from torch import nn

from ..errors import InputError
from ..run import RunLock, folder_swap, write_json_atomic
from ..run.output_dir import check_apart
from .config import TRAINING_STAGES, CompressionConfig, onnx_stage_names
from .fingerprint import fingerprint, library_versions, model_fingerprint, pipeline_source, source_fingerprint
from .source import load_source
from .stages import STAGE_FILE, STAGES_DIR, TRAINING_DIR, Context, apply_stage, stage_files, stage_label, stage_settings

logger = logging.getLogger(__name__)

__all__ = ["CompressionResult", "compress"]

PIPELINE_FILE = "pipeline.json"
READ_FILES = ("eval_file", "train_file", "tokenizer_name", "prune_vocabulary", "importance_file", "calibration_file",
              "teacher", "stage_cache")  # fmt: skip


@dataclass
class CompressionResult:
    """What `compress` made: the final PyTorch model, the report (as compression_report.json), and the files."""

    model: nn.Module
    report: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    stage_log: list[str] = field(default_factory=list)  # per stage: "ran", "kept" (from disk), "copied" (from
    # stage_cache) or "resumed"


def compress(
    model: str | nn.Module,
    config: CompressionConfig,
    output_dir: str | Path,
    *,
    tokenizer=None,
    callbacks=(),
    print_report: bool = False,
) -> CompressionResult:
    """Run the pipeline `config` declares on `model` (a model folder, or a model in memory with its `tokenizer`)
    and write into `output_dir`: `model/` (the last PyTorch stage), `onnx/<stage>/`, `stages/` (every stage, for
    resuming), `compression_report.{json,md,png}`. `callbacks` go to the Trainer of every training stage."""
    from transformers import AutoConfig

    from ..compression.tasks import detect_task

    output = Path(output_dir)
    model_dir = model if isinstance(model, (str, Path)) else "<model in memory>"
    _check_output(output, model_dir, config)
    if config.eval_file is None:
        raise InputError("the pipeline needs an eval_file: every stage is scored on it")
    if isinstance(model, (str, Path)):
        task_name = detect_task(AutoConfig.from_pretrained(model)) if config.task == "auto" else config.task
        config.check_task(task_name)  # before any work
        model, tokenizer, task_name = load_source(str(model), task_name, config.tokenizer_name)
        source = pipeline_source(str(model_dir), config.tokenizer_name)
    else:
        if tokenizer is None:
            raise InputError("compress() of a model in memory needs its tokenizer")
        names = getattr(model.config, "architectures", None) or [type(model).__name__]  # made in memory: none saved
        task_name = detect_task(SimpleNamespace(architectures=names)) if config.task == "auto" else config.task
        config.check_task(task_name)
        model = model.cpu().eval()
        source = model_fingerprint(model)
    _check_compared(config, tokenizer, task_name)
    config.check_tokenizer(tokenizer)
    eval_fp = fingerprint(
        {
            "file": source_fingerprint(config.eval_file),
            **{k: getattr(config, k) for k in ("max_eval_samples", "text_column_names", "label_column_name",
                                                "source_lang", "target_lang", "max_new_tokens", "data_format",
                                                "chat_template")},
        }
    )  # fmt: skip
    names = config.stage_names()
    plan = _fingerprints(names, config, source)
    ctx = Context(config, task_name, tokenizer, model, str(model_dir), output / TRAINING_DIR, list(callbacks), plan)
    eval_task = ctx.data(config.eval_file, "eval_file", config.max_eval_samples)  # checked before output exists
    output.mkdir(parents=True, exist_ok=True)
    RunLock.acquire(output)  # one pipeline at a time writes here (held until this process ends)
    report_fp = fingerprint(
        {"stages": plan, "eval": eval_fp, "repeats": config.latency_repeats, "compare": _compared_fps(config)}
    )
    recorded = _read_json(output / PIPELINE_FILE)
    if recorded.get("fingerprint") == report_fp and (output / "compression_report.json").is_file():
        report = json.loads((output / "compression_report.json").read_text())
        logger.info("%s holds this pipeline's result already: nothing to do.", output)
        if print_report:
            print((output / "compression_report.md").read_text())
        return CompressionResult(_load_stage(output / "model"), report, _files(output), ["kept"] * (len(names) + 1))
    return _run(ctx, names, plan, source, eval_task, eval_fp, report_fp, output, print_report)


def _run(ctx, names, plan, source, eval_task, eval_fp, report_fp, output, print_report) -> CompressionResult:
    from ..compression.io import save_compressed
    from ..compression.onnx import load_onnx

    config = ctx.config
    folders: dict[str, Path] = {}  # report row -> stage folder
    records: dict[str, dict] = {}
    log: list[str] = []
    current: nn.Module | None = copy.deepcopy(ctx.original)  # the original stays as it is: the teacher
    float_label = "original"
    steps = [("original", source)] + [(name, plan[name]) for name in names]
    stale_dirs = {p.name for p in (output / STAGES_DIR).glob("*")} if (output / STAGES_DIR).is_dir() else set()
    for index, (name, fp) in enumerate(steps):
        label = "original" if name == "original" else stage_label(name, config)
        folder = output / STAGES_DIR / f"{index:02d}_{name}"
        stale_dirs.discard(folder.name)
        record = _read_json(folder / STAGE_FILE)
        copied = False
        if record.get("fingerprint") != fp and name in TRAINING_STAGES and config.stage_cache:
            record = _copy_cached(Path(config.stage_cache) / f"{name}-{fp}", folder, fp, label)
            copied = bool(record)
        if record.get("fingerprint") == fp:
            log.append("copied" if copied else "kept")
            current = None  # loaded from its folder when a later stage needs it
        else:
            if current is None:
                current = _load_stage(folders[_previous_pytorch(folders)])
            start = time.perf_counter()
            resumed = (ctx.training_dir / name).is_dir()
            if name == "onnx":
                model_for_onnx = ctx.original if float_label == "original" else _load_stage(folders[float_label])
                info = _export_onnx(ctx, model_for_onnx, float_label, folder, fp)
            else:
                if name != "original":
                    current, info = apply_stage(name, current, ctx)
                else:
                    info = {}
                with folder_swap(folder) as staging:
                    save_compressed(current, staging, ctx.tokenizer)
                    record = {"fingerprint": fp, "stage": name, "label": label, **info,
                              "seconds": time.perf_counter() - start}  # fmt: skip
                    write_json_atomic(staging / STAGE_FILE, record)
            record = _read_json(folder / STAGE_FILE)
            shutil.rmtree(ctx.training_dir / name, ignore_errors=True)
            log.append("resumed" if resumed and "training" in record else "ran")
        if name == "onnx":
            for onnx_name in record["onnx_stages"]:
                folders[onnx_name] = folder / onnx_name
                records[onnx_name] = record
        else:
            folders[label], records[label] = folder, record
            if name not in ("quantize", "qat"):
                float_label = label
    for leftover in stale_dirs:  # stages of an earlier pipeline this one does not have
        shutil.rmtree(output / STAGES_DIR / leftover, ignore_errors=True)
    shutil.rmtree(ctx.training_dir, ignore_errors=True)
    models = {
        label: load_onnx(path, spinning=False) if path.parent.name.endswith("_onnx") else _load_stage(path)
        for label, path in folders.items()
    }
    from .report import pipeline_report

    report = pipeline_report(ctx, models, folders, records, eval_task, eval_fp, output)
    final = _previous_pytorch(folders)
    with folder_swap(output / "model") as staging:
        for item in folders[final].iterdir():
            if item.name != STAGE_FILE:
                shutil.copy2(item, staging / item.name)
    _publish_onnx(output, {k: v for k, v in folders.items() if v.parent.name.endswith("_onnx")})
    _write_card(ctx, report, folders, output)
    write_json_atomic(output / PIPELINE_FILE, {"fingerprint": report_fp, "stages": plan, "log": log})
    if print_report:
        print((output / "compression_report.md").read_text())
    return CompressionResult(models[final], report, _files(output), log)


def _write_card(ctx, report: dict, folders: dict[str, Path], output: Path) -> None:
    """OUT/README.md: the model card (Hub metadata, every stage's figures, how to load model/ and onnx/)."""
    from ..run.model_card import compression_model_card, write_model_card

    rows = {name: row for name, row in report["stages"].items() if name in folders}  # not the compare rows
    base = ctx.model_dir if ctx.model_dir != "<model in memory>" else None
    card = compression_model_card({**report, "stages": rows}, base, ctx.task_name, location=str(output),
                                  dataset=Path(ctx.config.eval_file).name)  # fmt: skip
    write_model_card(card, output)


def _copy_cached(cached: Path, folder: Path, fp: str, label: str) -> dict:
    """The training stage `cached` (a `StageCache` folder: an `hfopt optimize` output's stages/<stage>-<fp>) copied
    into `folder` when it holds the stage of fingerprint `fp`; its record, or {} when it holds another or none."""
    record = _read_json(cached / STAGE_FILE)
    if record.get("fingerprint") != fp:
        return {}
    logger.info("Copying %s from %s (the same model, data and settings): it does not train again.", label, cached)
    with folder_swap(folder) as staging:
        for item in cached.iterdir():
            if item.name != STAGE_FILE:
                shutil.copy2(item, staging / item.name)
        write_json_atomic(staging / STAGE_FILE, {**record, "label": label, "copied_from": str(cached)})
    return _read_json(folder / STAGE_FILE)


def _fingerprints(names: list[str], config: CompressionConfig, source: str) -> dict[str, str]:
    """Each stage's fingerprint: the previous stage's, its settings, its data files' content, the versions."""
    plan, previous, versions = {}, source, library_versions()
    for name in names:
        files = {key: source_fingerprint(path) for key, path in stage_files(name, config).items()}
        previous = plan[name] = fingerprint(
            {"previous": previous, "stage": name, "settings": stage_settings(name, config), "files": files,
             "versions": versions}
        )  # fmt: skip
    return plan


def _export_onnx(ctx, model, exported_from: str, folder: Path, fp: str) -> dict:
    from ..compression.onnx import export_stages

    config = ctx.config
    names = onnx_stage_names(config.onnx, ctx.task_name)
    calibration = None
    if "onnx_int8_static" in names:
        role = "calibration_file" if config.calibration_file else "eval_file"
        calibration = ctx.data(config.calibration_file or config.eval_file, role, config.calibration_samples or 128)
    start = time.perf_counter()
    with folder_swap(folder) as staging:
        export_stages(model, ctx.tokenizer, names, staging, ctx.task_name,
                      calibration.metric_batches if calibration else None)  # fmt: skip
        source = calibration and f"{config.calibration_file or config.eval_file}, first {len(calibration.texts)} rows"
        record = {"fingerprint": fp, "stage": "onnx", "onnx_stages": names, "calibration": source,
                  "exported_from": exported_from,
                  "seconds": time.perf_counter() - start}  # fmt: skip
        write_json_atomic(staging / STAGE_FILE, record)
    return record


def _publish_onnx(output: Path, onnx_folders: dict[str, Path]) -> None:
    """OUT/onnx/<stage>: a copy of each ONNX stage this report describes; others (an earlier run's) are removed."""
    from ..compression.onnx import ONNX_STAGES

    for name, folder in onnx_folders.items():
        with folder_swap(output / "onnx" / name) as staging:
            for item in folder.iterdir():
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)
    if (output / "onnx").is_dir():
        for item in (output / "onnx").iterdir():
            if item.is_dir() and item.name in ONNX_STAGES and item.name not in onnx_folders:
                logger.info("Removing %s: an ONNX stage of an earlier compress this one did not make.", item)
                shutil.rmtree(item)


def _previous_pytorch(folders: dict[str, Path]) -> str:
    return [label for label, path in folders.items() if not path.parent.name.endswith("_onnx")][-1]


def _load_stage(folder: Path) -> nn.Module:
    from ..compression.io import load_compressed

    return load_compressed(folder).cpu().eval()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _files(output: Path) -> dict[str, Path]:
    names = ("model", "onnx", "stages", "README.md", "compression_report.json", "compression_report.md",
             "compression_report.png")  # fmt: skip
    return {name: output / name for name in names if (output / name).exists()}


def _compared_fps(config: CompressionConfig) -> dict[str, str | None]:
    return {item.split("=", 1)[0]: source_fingerprint(item.split("=", 1)[1]) for item in config.compare}


def _check_output(output: Path, model_dir, config: CompressionConfig) -> None:
    """The output folder is apart from everything the pipeline reads, and is a folder, not a file."""
    inputs = {
        "model_dir": model_dir if isinstance(model_dir, (str, Path)) and model_dir != "<model in memory>" else None,
        **{f"--{name}": getattr(config, name) for name in READ_FILES},
        **{f"--compare {item.split('=', 1)[0]}": item.split("=", 1)[1] for item in config.compare},
    }  # fmt: skip
    check_apart(output, inputs)
    if output.exists() and not output.is_dir():
        raise InputError(f"--output_dir {output} is a file, not a folder")


def _check_compared(config: CompressionConfig, tokenizer, task_name: str) -> None:
    taken = {"original", *(stage_label(n, config) for n in config.stage_names() if n != "onnx")}
    taken |= {"onnx", "onnx_int8", "onnx_int8_static"}
    for item in config.compare:
        name, folder = item.split("=", 1)
        if name in taken:
            raise InputError(
                f"--compare {item}: '{name}' already names a row of the report (one of {', '.join(sorted(taken))}), "
                "whose figures this one would replace; give each --compare its own NAME"
            )
        taken.add(name)
