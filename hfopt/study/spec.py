"""The study file: which recipe, which base configuration, which variants and seeds; read, checked (every
variant's flags parsed by the recipe's own parser before anything runs) and expanded into runs.

    recipe: finetune_bert                  # a bundled recipe, or the path of a recipe script
    config: recipes/configs/my.yaml        # optional: the recipe YAML every run starts from
    args: {num_train_epochs: 2}            # optional: flags every run shares
    seeds: [42, 43]
    baseline: baseline                     # the variant the others are compared with (default: the first)
    variants:
      - name: baseline
      - name: cosine
        args: {lr_scheduler_type: cosine}
      - name: bf16
        accelerate_config: accelerate_configs/cpu_bf16.yaml
    compress: {eval_file: dev.csv, args: {quantize: dynamic_int8}}   # optional: hfopt compress every run

Example::

    spec = load_study("recipes/studies/sentiment_strategies.yaml")
    for run in spec.runs(Path("outputs/study")): print(run.name, run.flags)
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..accelerate_config import check_accelerate_config
from ..args import load_yaml, parse_args, to_flags
from ..errors import InputError, raised_in
from .slurm import SlurmSettings

__all__ = ["Run", "Study", "Variant", "load_study"]

STUDY_KEYS = {
    "name",
    "description",
    "recipe",
    "config",
    "args",
    "accelerate_config",
    "launch_args",
    "seeds",
    "baseline",
    "metric",
    "greater_is_better",
    "output_dir",
    "compress",
    "variants",
    "measure_latency",
    "parallel",
    "gpus_per_run",
    "executor",
    "slurm",
}
EXECUTORS = ("local", "slurm")
VARIANT_KEYS = {"name", "description", "args", "accelerate_config", "launch_args"}
RESERVED_FLAGS = {"output_dir", "seed", "config"}  # the study sets these for every run
# The headline metric of each bundled recipe, and whether higher is better.
# Metrics that are better when lower, by the words of their names (split at "_"); every other is better higher.
# Words of a metric's name that say which way is better (matched against its "_"-separated parts).
LOWER_IS_BETTER = {
    *("loss", "perplexity", "ppl", "nll", "bpb", "bpc", "bits", "mse", "rmse", "mae", "mape", "wer", "cer", "ter"),
    *("error", "distance", "runtime", "seconds", "time", "latency", "ms", "mb", "bytes", "memory", "size"),
}
HIGHER_IS_BETTER = {
    *("accuracy", "acc", "f1", "mcc", "matthews", "bleu", "chrf", "rouge1", "rouge2", "rougel", "rougelsum"),
    *("rouge", "meteor", "precision", "recall", "auc", "exact", "em", "pearson", "spearman", "pearsonr"),
    *("spearmanr", "r2", "retention", "speedup", "throughput", "second"),  # samples_per_second, ...
}
RECIPE_METRICS = {
    "finetune_bert": ("eval_accuracy", True),
    "distill_bert": ("eval_accuracy", True),
    "finetune_gpt": ("eval_perplexity", False),
    "finetune_translation": ("eval_bleu", True),
}


@dataclass
class Variant:
    """One strategy of a study: flags on top of the study's, and optionally its own launch setting."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    accelerate_config: str | None = None
    launch_args: list[str] = field(default_factory=list)
    description: str = ""


@dataclass
class Run:
    """One training of a study: a variant with a seed, in its own output folder."""

    variant: str
    seed: int
    recipe: Path
    flags: list[str]
    accelerate_config: str | None
    launch_args: list[str]
    output_dir: Path

    @property
    def name(self) -> str:
        return f"{self.variant}/seed-{self.seed}"

    def command(self, python: str) -> list[str]:
        """The `hfopt launch` command line of this run."""
        config = ["--config_file", self.accelerate_config] if self.accelerate_config else []
        return [
            python,
            "-m",
            "hfopt.cli",
            "launch",
            *config,
            *self.launch_args,
            str(self.recipe),
            *self.flags,
            "--output_dir",
            str(self.output_dir),
            "--seed",
            str(self.seed),
        ]


@dataclass
class Study:
    """A parsed, checked study file.

    Args:
        name: the study's name (its file name by default).
        recipe: the recipe script every run launches.
        variants: the strategies compared; `baseline` names the one the others are measured against.
        seeds: every variant runs once per seed.
        metric / greater_is_better: the headline metric of the tables and plots.
    """

    name: str
    path: Path
    recipe: Path
    recipe_name: str
    base_args: dict[str, Any]
    config: str | None
    accelerate_config: str | None
    launch_args: list[str]
    seeds: list[int]
    variants: list[Variant]
    baseline: str
    metric: str
    greater_is_better: bool
    output_dir: Path
    measure_latency: bool = True
    compress: dict[str, Any] | None = None
    description: str = ""
    parallel: int = 1  # runs at once on this machine, each with its share of the cores (or GPUs)
    gpus_per_run: int | None = None  # with parallel on a GPU machine; unset: the GPUs split evenly
    executor: str = "local"  # local: on this machine; slurm: each run a task of a Slurm job array
    slurm: SlurmSettings = field(default_factory=SlurmSettings)  # the slurm executor's settings
    resolved: dict[str, dict] = field(default_factory=dict)  # each variant's resolved recipe configuration

    def runs(self, output_dir: Path | None = None) -> list[Run]:
        """Every (variant, seed) run, in `output_dir/runs/<variant>/seed-<n>`, in the order they run: every
        variant (in file order) for the first seed, then every variant for the next, so that a drift of the
        machine over the study spreads over all variants instead of lining up with one."""
        root = Path(output_dir or self.output_dir)
        runs = []
        for seed in self.seeds:
            for variant in self.variants:
                runs.append(
                    Run(
                        variant.name,
                        seed,
                        self.recipe,
                        self.flags(variant),
                        variant.accelerate_config or self.accelerate_config,
                        [*self.launch_args, *variant.launch_args],
                        root / "runs" / variant.name / f"seed-{seed}",
                    )
                )
        return runs

    def flags(self, variant: Variant) -> list[str]:
        """The recipe flags of a variant: the study's config and args, then the variant's."""
        config = ["--config", self.config] if self.config else []
        extra = {"measure_latency": True} if self.measure_latency else {}
        if importlib.util.find_spec("tensorboard") is not None:  # every run under OUT/tensorboard (see runner)
            extra["report_to"] = "tensorboard"
        return [*config, *to_flags({**extra, **self.base_args, **variant.args})]


def metric_greater_is_better(metric: str) -> bool | None:
    """Whether a higher value of `metric` is better, from its name: losses, perplexities, error rates, times and
    sizes are better when lower; accuracy, F1, BLEU, correlations, throughput when higher; None for a name that
    says neither (a study must then state `greater_is_better`).

    Example::

        metric_greater_is_better("eval_perplexity")  # False
        metric_greater_is_better("eval_mse")         # False
        metric_greater_is_better("eval_accuracy")    # True
    """
    words = set(metric.lower().split("_"))
    if words & LOWER_IS_BETTER:
        return False
    return True if words & HIGHER_IS_BETTER else None


def resolve_recipe(recipe: str, near: Path) -> Path:
    """The script of a bundled recipe name (recipes/<name>.py, looked for beside the study file and above it, then
    in the working folder) or a path."""
    candidate = Path(recipe)
    if candidate.suffix == ".py":
        for base in (Path.cwd(), near):
            path = candidate if candidate.is_absolute() else base / candidate
            if path.is_file():
                return path.resolve()
        raise InputError(f"recipe script {recipe} does not exist")
    for folder in [near, *near.parents, Path.cwd()]:
        path = folder / "recipes" / f"{recipe}.py"
        if path.is_file():
            return path.resolve()
    raise InputError(
        f"recipe '{recipe}' not found (looked for recipes/{recipe}.py beside the study file and in the "
        "working folder); give the path of the recipe script (a plain pip install of hfopt has no "
        "recipes/ folder: copy the recipe from the repository)"
    )


def _load_recipe(path: Path):
    module_name = "hfopt_study_recipe_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        if raised_in(err, "hfopt"):
            raise  # the recipe imported hfopt, whose bug keeps its traceback
        raise InputError(f"recipe {path} could not be imported: {type(err).__name__}: {err}") from None
    if not hasattr(module, "ARGUMENTS") or not hasattr(module, "RECIPE"):
        raise InputError(f"{path} is not an hfopt recipe (it has no ARGUMENTS and RECIPE)")
    return module


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a mapping of flag: value, got {type(value).__name__}")
    return value


def _strings(value, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{where} must be a list of strings")
    return [str(v) for v in value]


def _whole(value, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{where} must be a whole number ≥ 1, got {value!r}")
    return value


def _executor(value: Any, where: str) -> str:
    if value not in EXECUTORS:
        hint = difflib.get_close_matches(str(value), EXECUTORS, n=1)
        raise InputError(
            f"{where}: executor '{value}' is not one of {', '.join(EXECUTORS)}"
            + (f" (did you mean '{hint[0]}'?)" if hint else "")
        )
    return value


def _unknown(keys, allowed, where: str) -> None:
    import difflib

    for key in keys:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            raise InputError(f"{where}: unknown key '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))


def load_study(path: str | Path, check_flags: bool = True) -> Study:
    """Read and check a study file; with `check_flags`, parse every variant's flags with the recipe's own
    arguments (an unknown or mistyped flag fails here, naming the variant, before anything runs)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"study file {path} does not exist")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), f"study file {path}")
    except yaml.YAMLError as err:
        raise InputError(f"study file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InputError(f"study file {path} must be a mapping (recipe, variants, seeds, ...)")
    _unknown(data, STUDY_KEYS, f"study file {path}")
    if "recipe" not in data:
        raise InputError(f"study file {path} names no recipe")
    variants_data = data.get("variants") or []
    if not isinstance(variants_data, list) or not variants_data:
        raise InputError(f"study file {path} has no variants (a list of {{name: ..., args: {{...}}}})")
    variants = []
    for i, item in enumerate(variants_data):
        if not isinstance(item, dict) or not item.get("name"):
            raise InputError(f"study file {path}: variant {i + 1} needs a name")
        name = str(item["name"])
        _unknown(item, VARIANT_KEYS, f"variant '{name}'")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise InputError(f"variant '{name}': a name of letters, digits, '_', '-' and '.' (it names a folder)")
        variants.append(
            Variant(
                name,
                _mapping(item.get("args"), f"variant '{name}' args"),
                item.get("accelerate_config"),
                _strings(item.get("launch_args"), f"variant '{name}' launch_args"),
                str(item.get("description", "")),
            )
        )
    names = [v.name for v in variants]
    for name in names:
        if set(name) == {"."}:
            raise InputError(f"variant '{name}': a name of dots would name a folder outside the study's runs")
    folded = [n.casefold() for n in names]  # folders of names differing only in case are one on macOS/Windows
    duplicates = sorted({n for n in names if folded.count(n.casefold()) > 1})
    if duplicates:
        raise InputError(
            f"study file {path}: variant names must be unique (ignoring case: each names a folder); "
            f"repeated: {', '.join(duplicates)}"
        )
    seeds = data.get("seeds", [42])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise InputError(f"study file {path}: seeds must be a list of whole numbers")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise InputError(
            f"study file {path}: seeds must be unique (each names a run's folder); repeated: "
            f"{', '.join(map(str, repeated))}"
        )
    baseline = str(data.get("baseline", names[0]))
    if baseline not in names:
        raise InputError(f"study file {path}: baseline '{baseline}' is not a variant ({', '.join(names)})")
    recipe_name = str(data["recipe"])
    recipe = resolve_recipe(recipe_name, path.parent.resolve())
    metric, higher = RECIPE_METRICS.get(recipe.stem, ("eval_loss", False))
    if data.get("metric") is not None:  # the direction comes from the metric, not from the recipe's default one
        metric = str(data["metric"])
        higher = metric_greater_is_better(metric)
    if data.get("greater_is_better") is not None:
        if not isinstance(data["greater_is_better"], bool):
            raise InputError(f"study file {path}: greater_is_better must be true or false")
        known = metric_greater_is_better(metric)
        if known is not None and data["greater_is_better"] != known:
            raise InputError(
                f"study file {path}: greater_is_better: {str(data['greater_is_better']).lower()} contradicts "
                f"{metric}, which is better when {'higher' if known else 'lower'}"
            )
        higher = data["greater_is_better"]
    elif higher is None:
        raise InputError(
            f"study file {path}: the name of metric '{metric}' does not say whether higher or lower is better: "
            "add greater_is_better: true or false"
        )
    name = str(data.get("name", path.stem))
    compress = data.get("compress")
    if compress is not None and (not isinstance(compress, dict) or "eval_file" not in compress):
        raise InputError(f"study file {path}: compress needs an eval_file (and optionally args: {{...}})")
    study = Study(
        name=name,
        path=path,
        recipe=recipe,
        recipe_name=recipe.stem,
        base_args=_mapping(data.get("args"), f"study file {path}: args"),
        config=data.get("config"),
        accelerate_config=data.get("accelerate_config"),
        launch_args=_strings(data.get("launch_args"), f"study file {path}: launch_args"),
        seeds=seeds,
        variants=variants,
        baseline=baseline,
        metric=metric,
        greater_is_better=higher,
        output_dir=Path(data.get("output_dir", Path("outputs") / "studies" / name)),
        measure_latency=bool(data.get("measure_latency", True)),
        compress=compress,
        description=str(data.get("description", "")),
        parallel=_whole(data.get("parallel", 1), f"study file {path}: parallel"),
        gpus_per_run=None
        if data.get("gpus_per_run") is None
        else _whole(data["gpus_per_run"], f"study file {path}: gpus_per_run"),
        executor=_executor(data.get("executor", "local"), f"study file {path}"),
        slurm=SlurmSettings.from_mapping(data.get("slurm"), f"study file {path}"),
    )
    for variant in variants:
        for key in {**study.base_args, **variant.args}:
            if key in RESERVED_FLAGS:
                raise InputError(f"variant '{variant.name}': '{key}' is set by the study for every run")
    for config in {study.accelerate_config, *(v.accelerate_config for v in variants)} - {None}:
        check_accelerate_config(config)
    if check_flags:
        study.resolved = check_variant_flags(study)
    return study


def check_variant_flags(study: Study) -> dict[str, dict]:
    """Parse every variant's flags with the recipe's own parser, then put them through the recipe's own refusals
    (its `validate(arguments)`, where it has one), and return each variant's resolved configuration; the first
    mistake is an InputError naming the variant, with the recipe's own line."""
    recipe = _load_recipe(study.recipe)
    configs = {}
    for variant in study.variants:
        argv = [
            *study.flags(variant),
            "--output_dir",
            str(study.output_dir / "runs" / variant.name),
            "--seed",
            str(study.seeds[0]),
        ]
        try:
            *arguments, configs[variant.name] = parse_args(
                recipe.ARGUMENTS,
                recipe.RECIPE,
                argv,
                defaults=getattr(recipe, "DEFAULTS", None),
                demo=getattr(recipe, "DEMO", None),
            )
            if hasattr(recipe, "validate"):
                recipe.validate(arguments)
        except InputError as err:
            raise InputError(f"variant '{variant.name}': {err}") from None
    return configs
