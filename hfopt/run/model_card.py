"""Model cards: the README.md a finished run (or a compressed model) leaves in its model folder, which the Hub
reads: metadata as YAML front matter (library_name, base_model, datasets, tags, pipeline_tag, and the eval results
as `model-index`), then the results, the training strategies and key settings, the machine and library versions,
and how to load the model. Built with huggingface_hub's `ModelCard` / `ModelCardData` / `EvalResult`; every input
is a plain dict (a run's config, results and run_info.json; a compression report), so the card of any folder can be
made again from its record.

Example::

    card = run_model_card(results, config, "finetune_bert", info=run_info)
    write_model_card(card, "outputs/finetune_bert")        # README.md, atomically
    check_model_card("outputs/finetune_bert/README.md")    # parses, metadata valid (offline)

    card = compression_model_card(report, base_model="outputs/finetune_bert", task="classification")
    write_model_card(card, "outputs/compressed")

Recipes write the card in `finish_run`; with `--push_to_hub` it is the card Trainer's push uploads
(`push_run_to_hub`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .files import write_text_atomic
from .output_dir import CONFIG_FILE, MODEL_FILES, RESULTS_FILE, RUN_INFO_FILE

logger = logging.getLogger(__name__)

__all__ = [
    "check_model_card",
    "compression_model_card",
    "describe_base_model",
    "model_card_from_record",
    "push_run_to_hub",
    "run_model_card",
    "strategies_used",
    "write_missing_model_card",
    "write_model_card",
    "write_run_model_card",
]

CARD_FILE = "README.md"
# The Hub model the demo extra's packaged MiniLM is (its folder records no id of its own).
DEMO_MODEL_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

# Hub task (pipeline_tag) -> its pretty name and the Auto class that loads the model.
TASKS = {
    "text-classification": ("Text Classification", "AutoModelForSequenceClassification"),
    "text-generation": ("Text Generation", "AutoModelForCausalLM"),
    "translation": ("Translation", "AutoModelForSeq2SeqLM"),
    "text2text-generation": ("Text2Text Generation", "AutoModelForSeq2SeqLM"),
}
# hfopt's task names (recipes, hfopt.compression) -> Hub task.
TASK_ALIASES = {
    "classification": "text-classification",
    "sequence-classification": "text-classification",
    "causal_lm": "text-generation",
    "causal-lm": "text-generation",
    "lm": "text-generation",
    "seq2seq": "translation",  # hfopt's seq2seq task is translation (BLEU, chrF)
}
RECIPE_TASKS = {
    "finetune_bert": "text-classification",
    "distill_bert": "text-classification",
    "finetune_gpt": "text-generation",
    "finetune_translation": "translation",
}
# Result names (after eval_/test_) that are timings or counts, not metrics of the model.
NOT_METRICS = {
    "runtime",
    "samples_per_second",
    "steps_per_second",
    "epoch",
    "model_preparation_time",
    "gen_len",
    "num_tokens",
    "jit_compilation_time",
}
METRIC_IDS = {"mcc": "matthews_correlation"}  # hfopt's name -> the Hub's metric id
SPLITS = {"eval": "validation", "test": "test"}
DATA_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".txt", ".parquet", ".arrow"}

# (tag, config keys that switch it on): the training strategies a card's tags and "Training" section list.
STRATEGIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("distillation", ("teacher_model_name_or_path",)),
    ("lora", ("use_peft", "lora_r", "lora_alpha", "lora_target_modules", "merge_adapters")),
    ("early-stopping", ("early_stopping_patience", "early_stopping_target", "max_train_time")),
    ("layer-freezing", ("freeze_embeddings", "num_frozen_layers", "freeze_patterns")),
    ("gradual-unfreezing", ("unfreeze_every_n_steps", "unfreeze_every_n_epochs")),
    ("layerwise-lr-decay", ("layerwise_lr_decay",)),
    ("lr-schedule", ("lr_schedule",)),
    ("l1-regularization", ("l1_lambda",)),
    ("loss-watchdog", ("watchdog",)),
    ("dynamic-batching", ("batching", "max_tokens_per_batch", "batch_size_warmup_steps")),
    ("data-augmentation", ("augment_deletion_prob", "augment_swap_prob", "augment_mask_prob")),
    ("sequence-packing", ("packing",)),
    ("hyperparameter-search", ("hp_search_trials",)),
    ("gradual-pruning", ("gradual_pruning_sparsity",)),
    ("quantization-aware-training", ("qat",)),
    ("layer-sharing", ("share_layers",)),
    ("bf16", ("bf16",)),
    ("fp16", ("fp16",)),
    ("gradient-checkpointing", ("gradient_checkpointing",)),
    ("torch-compile", ("torch_compile",)),
)
# Keys whose value only details a strategy switched on by another key (shown with it, never switching it on).
DETAIL_KEYS = {"lora_r", "lora_alpha", "lora_target_modules", "merge_adapters", "max_tokens_per_batch"}
OFF_VALUES = (None, False, 0, 0.0, "", "none", "no", "samples", [], {})
KEY_SETTINGS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "optim",
    "max_seq_length",
    "block_size",
    "max_source_length",
    "max_target_length",
    "data_format",
    "metric_for_best_model",
    "student_num_layers",
    "alpha_ce",
    "temperature",
)


# --- what a run was -------------------------------------------------------------------------------------------


def hub_task(task: str | None) -> str | None:
    """The Hub task (pipeline_tag) of an hfopt task name ("classification", "causal_lm", "seq2seq") or of a Hub
    task already; None for an unknown one."""
    if task is None:
        return None
    task = TASK_ALIASES.get(task, task)
    return task if task in TASKS else None


def task_of_model(model, recipe: str = "") -> str | None:
    """The Hub task of a run: its recipe's, else what the model's class says (a PEFT wrapper included)."""
    if recipe in RECIPE_TASKS:
        return RECIPE_TASKS[recipe]
    names = [type(model).__name__, *(getattr(getattr(model, "config", None), "architectures", None) or [])]
    for name in names:
        if "SequenceClassification" in name:
            return "text-classification"
        if "CausalLM" in name or "LMHead" in name:
            return "text-generation"
        if "Seq2SeqLM" in name or "ConditionalGeneration" in name or "MTModel" in name:
            return "text2text-generation"
    return None


def is_hub_id(name: str) -> bool:
    """Whether `name` reads as a Hub repository id ("bert-base-uncased", "org/name") and is no local path."""
    if not name or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def describe_base_model(name_or_path: str | None, _depth: int = 0) -> tuple[str | None, str]:
    """(the Hub id to record as `base_model`, or None; how the card's text names the model).

    A Hub id is itself. A local folder is named by its folder name, and its Hub id is recorded when known: a Hub
    cache snapshot (`models--org--name/snapshots/...`), the demo extra's packaged MiniLM, the `base_model` of the
    folder's own model card, or (an hfopt run's output) the model its run_info.json says it was trained from.

    Example::

        describe_base_model("bert-base-uncased")   # ("bert-base-uncased", "[bert-base-uncased](https://...)")
        describe_base_model("outputs/teacher")     # (its recorded origin or None, "the local model folder ...")
    """
    if not name_or_path:
        return None, ""
    name = str(name_or_path)
    if not os.path.exists(name):
        return (name, _hub_link(name)) if is_hub_id(name) else (None, f"`{name}`")
    path = Path(name).resolve()
    origin, how = _recorded_hub_id(path, _depth)
    if how == "cache":
        return origin, _hub_link(origin)
    if how == "demo":
        return origin, f"{_hub_link(origin)} (the copy the demo extra installs)"
    label = f"the local model folder `{path.name}`"
    return origin, (f"{label}, itself from {_hub_link(origin)}" if origin else label)


def _hub_link(hub_id: str) -> str:
    return f"[{hub_id}](https://huggingface.co/{hub_id})"


def _recorded_hub_id(path: Path, depth: int) -> tuple[str | None, str]:
    """(the Hub id a local folder is, or descends from; how it is known: "cache", "demo", "card", "run", "")."""
    for part in path.parts:  # the Hub cache: .../models--org--name/snapshots/<sha>
        if part.startswith("models--") and "snapshots" in path.parts:
            candidate = part.removeprefix("models--").replace("--", "/")
            if is_hub_id(candidate):
                return candidate, "cache"
    try:
        from ..models import demo_model_path

        if path == Path(demo_model_path()).resolve():
            return DEMO_MODEL_HUB_ID, "demo"
    except Exception:  # the demo extra is not installed
        pass
    card = path / CARD_FILE
    if card.is_file():
        try:
            base = ModelCard.load(card, ignore_metadata_errors=True).data.get("base_model")
        except Exception:
            base = None
        base = base[0] if isinstance(base, list) and base else base
        if isinstance(base, str) and is_hub_id(base):
            return base, "card"
    if depth < 3 and (path / RUN_INFO_FILE).is_file():
        try:
            config = json.loads((path / RUN_INFO_FILE).read_text()).get("config") or {}
        except (OSError, ValueError):
            config = {}
        origin = config.get("model_name_or_path") or config.get("teacher_model_name_or_path")
        if origin and Path(str(origin)).resolve() != path:
            found = describe_base_model(origin, depth + 1)[0]
            return found, "run" if found else ""
    return None, ""


def _is_on(value: Any) -> bool:
    return not any(value is off or (type(value) is type(off) and value == off) for off in OFF_VALUES)


def strategies_used(config: dict[str, Any], recipe: str = "") -> dict[str, dict[str, Any]]:
    """{tag: {setting: value}} of the training strategies a run's configuration switches on, in a fixed order.

    Example::

        strategies_used({"early_stopping_patience": 3, "bf16": True})
        # {"early-stopping": {"early_stopping_patience": 3}, "bf16": {"bf16": True}}
    """
    used: dict[str, dict[str, Any]] = {}
    for tag, keys in STRATEGIES:
        settings = {key: config[key] for key in keys if key in config and _is_on(config[key])}
        if tag == "distillation" and recipe.startswith("distill") and not settings:
            settings = {"recipe": recipe}
        if tag == "lora" and not config.get("use_peft"):
            continue
        if any(key not in DETAIL_KEYS for key in settings):
            used[tag] = settings
    return used


def _plain_number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)  # numpy scalars
    except (TypeError, ValueError):
        return None


def _local_name(path: str | None) -> str | None:
    return Path(str(path)).name if path else None


def eval_dataset(config: dict[str, Any], split: str) -> tuple[str, str, str | None] | None:
    """(type, name, config) of the data a split was evaluated on, as a model-index names it: a Hub dataset by its
    id, local files by their file name (not a Hub dataset; `datasets` metadata leaves them out)."""
    if config.get("dataset_name"):
        name, subset = _local_name(config["dataset_name"]), config.get("dataset_config_name")
        name = str(config["dataset_name"]) if is_hub_id(str(config["dataset_name"])) else name
        return name, f"{name} ({subset})" if subset else name, subset
    if split == "test":
        file = _local_name(config.get("test_file"))
    else:
        file = _local_name(config.get("validation_file"))
        if file is None and config.get("train_file"):
            held_out = config.get("validation_split_percentage")
            file = f"{_local_name(config['train_file'])}, held-out {held_out}%" if held_out else None
            if file:
                return _local_name(config["train_file"]), file, None
    return (file, file, None) if file else None


def run_eval_results(results: dict[str, Any], config: dict[str, Any], task: str) -> list[EvalResult]:
    """The eval_* and test_* metrics of a run's results as the Hub's EvalResults (timings and counts left out,
    `eval_before_*` too: those are the model before training)."""
    out = []
    for key, value in results.items():
        prefix, _, metric = key.partition("_")
        number = _plain_number(value)
        if prefix not in SPLITS or not metric or number is None or metric in NOT_METRICS:
            continue
        if metric.startswith("before_") or metric.endswith("_per_second"):
            continue
        split = SPLITS[prefix]
        dataset = eval_dataset(config, split)
        if dataset is None:
            continue
        dataset_type, dataset_name, dataset_config = dataset
        out.append(
            EvalResult(
                task_type=task,
                task_name=TASKS[task][0],
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_config=dataset_config,
                dataset_split=split,
                metric_type=METRIC_IDS.get(metric, metric),
                metric_name=f"{split} {metric}",
                metric_value=number,
            )
        )
    return out


def _languages(config: dict[str, Any]) -> list[str] | None:
    """The ISO 639 codes of a translation's languages ("en", "de"; mBART's "en_XX" as "en"); a code that is no
    language (a test's "xx") is left out when babel, if installed, does not know it."""
    codes = []
    for key in ("source_lang", "target_lang"):
        code = str(config.get(key) or "").split("_")[0].lower()
        if re.fullmatch(r"[a-z]{2,3}", code) and code not in codes and _known_language(code):
            codes.append(code)
    return codes or None


def _known_language(code: str) -> bool:
    try:
        import babel
    except ImportError:
        return True
    try:
        babel.Locale(code)
    except (ValueError, babel.UnknownLocaleError):
        return False
    return True


# --- the card of a run ------------------------------------------------------------------------------------------


def run_model_card(
    results: dict[str, Any],
    config: dict[str, Any],
    recipe: str,
    *,
    info: dict[str, Any] | None = None,
    task: str | None = None,
    model_id: str | None = None,
    folder: str | os.PathLike | None = None,
    extra_tags: Iterable[str] = (),
) -> ModelCard:
    """The model card of a finished run, from its results (all_results.json), configuration (config.yaml) and
    `info` (run_info.json: versions, machine, global batch); `task` a Hub task or hfopt's name (by default the
    recipe's); `model_id` how the loading code names the model (its Hub repository, or the folder); `folder` the
    model folder (what else it holds: an adapter, merged/, int8/).

    Example::

        card = run_model_card(results, config, "finetune_bert", info=run_info, model_id="me/my-model")
    """
    info = info or {}
    task = hub_task(task) or RECIPE_TASKS.get(recipe) or "text-classification"
    folder = Path(folder) if folder is not None else None
    model_id = model_id or (str(folder) if folder is not None else "path/to/model")
    strategies = strategies_used(config, recipe)
    base_id, base_label = describe_base_model(config.get("model_name_or_path"))
    teacher_id, teacher_label = describe_base_model(config.get("teacher_model_name_or_path"))
    if base_id is None and recipe.startswith("distill") and not config.get("model_name_or_path"):
        base_id = teacher_id  # a student made from the teacher's blocks
    hub_datasets = [str(config["dataset_name"])] if is_hub_id(str(config.get("dataset_name") or "")) else None
    eval_results = run_eval_results(results, config, task)
    model_name = Path(model_id).name if model_id else recipe
    tags = ["hfopt", task, *strategies, *extra_tags]
    data = ModelCardData(
        library_name="transformers",
        base_model=base_id,
        datasets=hub_datasets,
        language=_languages(config) if task in ("translation", "text2text-generation") else None,
        tags=tags,
        pipeline_tag=task,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    adapter = folder is not None and (folder / "adapter_config.json").is_file()
    body = [
        f"# {model_name}",
        "",
        _summary(recipe, task, config, base_label, teacher_label),
        "",
        *_results_section(results),
        *_training_section(config, strategies, info),
        *_machine_section(info),
        *_usage_section(task, model_id, adapter, folder, config),
    ]
    return _card(data, body)


def _summary(recipe: str, task: str, config: dict[str, Any], base_label: str, teacher_label: str) -> str:
    if config.get("model_name_or_path"):
        origin = f"fine-tuned from {base_label}"
    elif recipe.startswith("distill"):
        origin = f"distilled from {teacher_label} (the student made of the teacher's blocks)"
    elif config.get("model_type"):
        origin = f"trained from scratch (a `{config['model_type']}` model)"
    else:
        origin = "trained"
    if recipe.startswith("distill") and config.get("model_name_or_path"):
        origin += f", distilled from {teacher_label}"
    if config.get("dataset_name"):
        name = str(config["dataset_name"])
        subset = f" ({config['dataset_config_name']})" if config.get("dataset_config_name") else ""
        data = f" on [{name}](https://huggingface.co/datasets/{name}){subset}" if is_hub_id(name) else f" on `{name}`"
        data += "" if is_hub_id(name) else subset
    else:
        files = [_local_name(config[k]) for k in ("train_file", "validation_file", "test_file") if config.get(k)]
        files = list(dict.fromkeys(files))
        data = f" on local data ({', '.join(f'`{f}`' for f in files)})" if files else ""
    return (
        f"A {TASKS[task][0].lower()} model {origin}{data}, with the `{recipe}` recipe of hfopt (fine-tuning and "
        "compression recipes for the Hugging Face Trainer)."
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def _table(header: tuple[str, str], rows: Iterable[tuple[str, Any]]) -> list[str]:
    rows = list(rows)
    if not rows:
        return []
    cells = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    return cells + [f"| {k} | {_fmt(v).replace('|', '/')} |" for k, v in rows]


def _results_section(results: dict[str, Any]) -> list[str]:
    rows = [(k, v) for k, v in sorted(results.items()) if not isinstance(v, (dict, list))]
    if not rows:
        return []
    return ["## Results", "", *_table(("result", "value"), rows), ""]


def _training_section(config: dict[str, Any], strategies: dict[str, dict[str, Any]], info: dict[str, Any]) -> list[str]:
    lines = ["## Training", ""]
    if strategies:
        lines.append("Strategies:")
        lines.append("")
        for tag, settings in strategies.items():
            shown = ", ".join(f"`{k}={v}`" for k, v in settings.items())
            lines.append(f"- {tag}: {shown}")
    else:
        lines.append("Strategies: none beyond the recipe's defaults.")
    settings = [(k, config[k]) for k in KEY_SETTINGS if config.get(k) not in (None, -1)]
    if info.get("global_batch_size"):
        settings.append(("global batch size", info["global_batch_size"]))
    seed = info.get("seed", config.get("seed"))
    if seed is not None:
        settings.append(("seed", seed))
    if settings:
        lines += ["", "Key settings:", "", *_table(("setting", "value"), settings)]
    lines += [
        "",
        f"The full configuration is `{CONFIG_FILE}` in this folder (rerun it with `--config {CONFIG_FILE}`); "
        f"`{RUN_INFO_FILE}` records the machine, versions and data fingerprints, `{RESULTS_FILE}` the results.",
        "",
    ]
    return lines


def _machine_section(info: dict[str, Any]) -> list[str]:
    if not info:
        return []
    cpu = info.get("cpu") or {}
    machine = [
        ("device", info.get("cuda_device") or info.get("device")),
        ("CPU", cpu.get("model")),
        ("processes", info.get("num_processes")),
        ("distribution", info.get("distributed_type")),
        ("mixed precision", info.get("mixed_precision")),
        ("CPU threads per process", info.get("torch_threads")),
        ("wall time (s)", info.get("wall_time_seconds")),
        ("peak memory (MB)", info.get("peak_memory_mb")),
    ]
    lines = ["## Machine and library versions", "", *_table(("machine", ""), [r for r in machine if r[1] is not None])]
    versions = info.get("versions") or {}
    if versions:
        lines += ["", *_table(("library", "version"), versions.items())]
    return [*lines, ""]


def _usage_section(task: str, model_id: str, adapter: bool, folder: Path | None, config: dict[str, Any]) -> list[str]:
    auto = TASKS[task][1]
    lines = [
        "## How to use",
        "",
        "```python",
        f"from transformers import {auto}, AutoTokenizer, pipeline",
        "",
        f'model = {auto}.from_pretrained("{model_id}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{model_id}")',
        f'pipe = pipeline("{task}", model=model, tokenizer=tokenizer)',
        "```",
        "",
    ]
    if adapter:
        lines += [
            "This folder holds LoRA adapters: loading it needs `peft` installed (transformers then loads the base "
            "model the adapter config names, and the adapters on top).",
            "",
        ]
    if folder is not None and (folder / "merged").is_dir():
        merged = f'`from_pretrained("{model_id}/merged")`'
        lines += [f"`merged/` holds the model with the adapters merged in: {merged}.", ""]
    if config.get("qat") and folder is not None and (folder / "int8").is_dir():
        lines += [
            "`int8/` holds the int8 model of quantization-aware training: "
            f'`hfopt.compression.load_compressed("{model_id}/int8")`.',
            "",
        ]
    return lines


def _card(data: ModelCardData, body: list[str]) -> ModelCard:
    """A ModelCard of metadata (huggingface_hub writes the YAML) and a Markdown body."""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body).rstrip() + "\n")


# --- the card of a compressed model --------------------------------------------------------------------------


def compression_model_card(
    report: dict[str, Any],
    base_model: str,
    task: str,
    *,
    location: str = ".",
    dataset: str | None = None,
    model_name: str | None = None,
    versions: dict[str, str] | None = None,
) -> ModelCard:
    """The model card of a compressed model folder, from the report `hfopt compress` writes
    (compression_report.json: "stages" in chain order, each with its parameters, size, task metrics, latency and
    changes against the original; "onnx" for ONNX Runtime stages): every stage and its figures, the metrics of the
    saved model (the last stage before any ONNX one) as the model-index, and how to load it
    (`hfopt.compression.load_compressed` for `model/`, `load_onnx` for `onnx/<stage>/`).

    `base_model`: the model that was compressed (a Hub id, or a local folder: see `describe_base_model`); `task`:
    hfopt's name ("classification", "causal_lm", "seq2seq") or a Hub task; `location`: how the loading code names
    the compressed folder; `dataset`: the evaluation data (a Hub dataset id, or a file name); `versions`: the
    library versions to list (`hfopt.run.library_versions()`; by default those of the libraries that load it).

    Example::

        report = json.loads(Path("out/compression_report.json").read_text())
        card = compression_model_card(report, "outputs/finetune_bert", "classification", location="out")
        write_model_card(card, "out")
    """
    task = hub_task(task) or hub_task(report.get("task")) or "text-classification"
    stages: dict[str, dict[str, Any]] = report.get("stages") or {}
    onnx_stages = dict((report.get("onnx") or {}).get("stages") or {})
    torch_stages = [name for name in stages if name not in onnx_stages]
    saved = torch_stages[-1] if torch_stages else None
    base_id, base_label = describe_base_model(base_model)
    metrics = list(report.get("metrics") or [])
    headline = report.get("metric") or (metrics[0] if metrics else None)
    eval_results = []
    hub_dataset = dataset if dataset and is_hub_id(dataset) and Path(dataset).suffix not in DATA_SUFFIXES else None
    if saved is not None:
        dataset_type = Path(dataset).name if dataset else "evaluation-data"
        dataset_name = f"{dataset_type} ({report.get('eval_examples', '?')} examples)"
        for metric in metrics:
            value = _plain_number(stages[saved].get(metric))
            if value is None:
                continue
            eval_results.append(
                EvalResult(
                    task_type=task,
                    task_name=TASKS[task][0],
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    metric_type=METRIC_IDS.get(metric, metric),
                    metric_name=f"{metric} ({saved})",
                    metric_value=value,
                )
            )
    kinds = _stage_kinds(list(stages), onnx_stages)
    quantized = any("quantiz" in k or "int8" in k for k in kinds)
    name = model_name or f"{Path(str(base_model)).name}-compressed"
    data = ModelCardData(
        library_name="transformers",
        base_model=base_id,
        base_model_relation="quantized" if base_id and quantized else None,
        datasets=[hub_dataset] if hub_dataset else None,
        tags=["hfopt", task, "compressed", *kinds],
        pipeline_tag=task,
        model_name=name if eval_results else None,
        eval_results=eval_results or None,
    )
    chain = " → ".join(f"`{s}`" for s in stages)
    body = [
        f"# {name}",
        "",
        f"A {TASKS[task][0].lower()} model compressed from {base_label or f'`{base_model}`'} by `hfopt compress`: "
        f"{chain}. `model/` holds `{saved}`"
        + (f"; `onnx/` the ONNX Runtime stages ({', '.join(f'`{s}`' for s in onnx_stages)})." if onnx_stages else "."),
        "",
        *_stages_section(report, stages, metrics, headline),
        *_compression_machine_section(report, versions if versions is not None else _loading_versions()),
        *_compressed_usage_section(location, saved, onnx_stages),
    ]
    return _card(data, body)


def _loading_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that load a compressed model."""
    versions = {"python": platform.python_version()}
    for name in ("hfopt", "torch", "transformers", "torchao", "onnxruntime", "onnx"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _stage_kinds(names: list[str], onnx_stages: dict[str, Any]) -> list[str]:
    kinds = []
    for name in names[1:]:
        lowered = name.lower()
        for word, kind in (
            ("prune_heads", "head-pruning"),
            ("prune_ffn", "structured-pruning"),
            ("prune_layers", "layer-pruning"),
            ("prune_magnitude", "magnitude-pruning"),
            ("prune", "pruning"),
            ("quantiz", "quantization"),
            ("int8", "quantization"),
            ("distil", "distillation"),
            ("shar", "layer-sharing"),
            ("vocab", "vocabulary-pruning"),
            ("onnx", "onnx"),
        ):
            if word in lowered and kind not in kinds:
                kinds.append(kind)
                break
    if onnx_stages and "onnx" not in kinds:
        kinds.append("onnx")
    return kinds


def _stages_section(
    report: dict[str, Any], stages: dict[str, dict[str, Any]], metrics: list[str], headline: str | None
) -> list[str]:
    columns = ["stage", *metrics]
    if headline:
        columns.append(f"Δ {headline}")
    columns += ["parameters", "non-zero", "size MB", "size ×", "b1 p50 ms", "b16 p50 ms", "speed-up b1", "speed-up b16"]
    lines = [
        "## Compression stages",
        "",
        f"Evaluated on {report.get('eval_examples', '?')} examples; latency: {report.get('latency', 'forward pass')}.",
        "",
        "| " + " | ".join(columns) + " |",
        "|---" * len(columns) + "|",
    ]

    def cell(row: dict[str, Any], key: str, spec: str = ".4f") -> str:
        value = _plain_number(row.get(key))
        return "" if value is None else format(value, spec)

    for name, row in stages.items():
        cells = [f"`{name}`", *(cell(row, m, ".2f" if m == "perplexity" else ".4f") for m in metrics)]
        if headline:
            cells.append(cell(row, f"delta_{headline}", "+.4f"))
        size = _plain_number(row.get("size_bytes"))
        cells += [
            cell(row, "parameters", ","),
            cell(row, "nonzero_parameters", ","),
            "" if size is None else f"{size / 1e6:.2f}",
            cell(row, "size_reduction", ".2f"),
            cell(row, "latency_b1_p50_ms", ".2f"),
            cell(row, "latency_b16_p50_ms", ".2f"),
            cell(row, "speedup_b1", ".2f"),
            cell(row, "speedup_b16", ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("latency_reliable") is False:
        lines += ["", "Timings were unstable on this machine: the speed-ups are not to be quoted."]
    for note in report.get("notes") or []:
        lines += ["", str(note)]
    return [*lines, ""]


def _compression_machine_section(report: dict[str, Any], versions: dict[str, str]) -> list[str]:
    cpu = report.get("cpu") or {}
    threads = next(iter((report.get("stages") or {}).values()), {}).get("threads")
    machine = [("CPU", cpu.get("model")), ("threads", threads)]
    lines = ["## Machine and library versions", "", *_table(("machine", ""), [r for r in machine if r[1] is not None])]
    return [*lines, "", *_table(("library", "version"), versions.items()), ""]


def _compressed_usage_section(location: str, saved: str | None, onnx_stages: dict[str, Any]) -> list[str]:
    lines = ["## How to use", ""]
    if saved is not None:
        lines += [
            f"`model/` (`{saved}`) loads with hfopt, which rebuilds the pruned structure and the quantized modules "
            "(plain `from_pretrained` does not know them):",
            "",
            "```python",
            "from transformers import AutoTokenizer",
            "from hfopt.compression import load_compressed",
            "",
            f'model = load_compressed("{location}/model")',
            f'tokenizer = AutoTokenizer.from_pretrained("{location}/model")',
            "```",
            "",
        ]
    for stage in onnx_stages:
        lines += [
            f"`onnx/{stage}/` runs on ONNX Runtime (the `onnx` extra), called like the PyTorch model:",
            "",
            "```python",
            "from transformers import AutoTokenizer",
            "from hfopt.compression import load_onnx",
            "",
            f'model = load_onnx("{location}/onnx/{stage}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{location}/onnx/{stage}")',
            "```",
            "",
        ]
        break
    lines += [
        "From the Hub, download the folder first: `huggingface_hub.snapshot_download(repo_id)` gives the local path.",
        "",
    ]
    return lines


# --- writing, checking, pushing --------------------------------------------------------------------------------


def write_model_card(card: ModelCard, folder: str | os.PathLike) -> Path:
    """Write `card` as folder/README.md, atomically (never half-written); returns its path. Call it from the main
    process only."""
    path = Path(folder) / CARD_FILE
    write_text_atomic(path, str(card))
    return path


def check_model_card(path: str | os.PathLike) -> ModelCard:
    """Load a model card as the Hub would and check its metadata offline: it parses strictly (a model-index
    that does not read as eval results is an error), its model-index survives the round trip through EvalResults,
    and it names library_name, pipeline_tag and tags. (`ModelCard.validate` asks the Hub's server; this needs no
    network.) Returns the card; raises ValueError naming what is wrong.

    Example::

        card = check_model_card("outputs/finetune_bert/README.md")
        card.data.eval_results[0].metric_value
    """
    card = ModelCard.load(Path(path))
    data = card.data.to_dict()
    missing = [key for key in ("library_name", "pipeline_tag", "tags") if not data.get(key)]
    if missing:
        raise ValueError(f"{path}: the card's metadata has no {', '.join(missing)}")
    if "model-index" in data:
        name, results = model_index_to_eval_results(data["model-index"])
        if eval_results_to_model_index(name, results) != data["model-index"]:
            raise ValueError(f"{path}: the model-index does not survive the round trip through EvalResults")
    base = data.get("base_model")
    for base_id in [base] if isinstance(base, str) else base or []:
        if not is_hub_id(base_id):
            raise ValueError(f"{path}: base_model {base_id!r} is no Hub model id")
    return card


def _has_model(folder: Path) -> bool:
    return any((folder / name).is_file() for name in MODEL_FILES)


def write_run_model_card(trainer, results: dict[str, Any], recipe: str, config: dict[str, Any]) -> ModelCard | None:
    """Write the card of a finished run into its output_dir (main process; after run_info.json is written), when
    the folder holds a saved model; returns it (None when there is no model, as after a hyperparameter search)."""
    output_dir = Path(trainer.args.output_dir)
    if not _has_model(output_dir):
        return None
    try:
        info = json.loads((output_dir / RUN_INFO_FILE).read_text())
    except (OSError, ValueError):
        info = {}
    model_id = getattr(trainer, "hub_model_id", None) or trainer.args.hub_model_id or str(output_dir)
    extra = [tag for tag in getattr(trainer.model, "model_tags", None) or [] if isinstance(tag, str)]
    card = run_model_card(
        results,
        config,
        recipe,
        info=info,
        task=task_of_model(trainer.model, recipe),
        model_id=model_id,
        folder=output_dir,
        extra_tags=extra,
    )
    write_model_card(card, output_dir)
    return card


def model_card_from_record(folder: str | os.PathLike, recipe: str | None = None) -> ModelCard:
    """The card of a finished run's folder made again from its record alone (all_results.json, run_info.json,
    config.json): for a folder an older hfopt left without one. `recipe` by default from the recorded command.

    Example::

        write_model_card(model_card_from_record("outputs/finetune_bert"), "outputs/finetune_bert")
    """
    folder = Path(folder)
    info = json.loads((folder / RUN_INFO_FILE).read_text())
    results = json.loads((folder / RESULTS_FILE).read_text())
    command = info.get("command") or [""]
    recipe = recipe or Path(str(command[0])).stem
    try:
        architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        architectures = []
    model = type("Recorded", (), {"config": type("Config", (), {"architectures": architectures})()})()
    return run_model_card(
        results, info.get("config") or {}, recipe, info=info, task=task_of_model(model, recipe), folder=folder
    )


def write_missing_model_card(folder: str | os.PathLike, recipe: str | None = None) -> Path | None:
    """Write the card of a finished run's folder from its record when it holds a model but no README.md (a run of
    an older hfopt); returns its path, None when nothing was written. A record it cannot read is logged, not
    raised: the card is a courtesy to a finished run."""
    folder = Path(folder)
    if (folder / CARD_FILE).exists() or not _has_model(folder):
        return None
    try:
        return write_model_card(model_card_from_record(folder, recipe), folder)
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("No model card written for %s: its record could not be read (%s).", folder, err)
        return None


def should_push(trainer, config: dict[str, Any]) -> bool:
    """Whether a finished run uploads its model: `--push_to_hub`, a model trained this run (not an evaluation only,
    nor a hyperparameter search, which leaves its best configuration, not a model)."""
    args = trainer.args
    return bool(args.push_to_hub and args.do_train and not config.get("hp_search_trials"))


def push_run_to_hub(trainer, card: ModelCard | None, commit_message: str = "End of training"):
    """Trainer's own push (`Trainer.push_to_hub`: save, then upload output_dir), with our card as README.md.

    Call it on every process (Trainer saves the model on all of them; only the main one uploads). Trainer would
    write its own draft card over README.md just before the upload (`create_model_card`); here that step writes
    `card` instead (on this trainer only, for this push), after the save, so that no README written by the save
    (PEFT writes one) replaces it. Returns what Trainer.push_to_hub returns."""

    def create_model_card(**kwargs):
        if card is not None:
            write_model_card(card, trainer.args.output_dir)

    trainer.create_model_card = create_model_card
    try:
        return trainer.push_to_hub(commit_message=commit_message, revision=trainer.args.hub_revision)
    finally:
        del trainer.create_model_card
