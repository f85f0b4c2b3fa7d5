"""`hfopt optimize` (and recipes/optimize.py): the fastest (or smallest) compressed model within an accuracy budget
(`hfopt.optimize.optimize`): parse the flags and the YAML (`--config`), call, print the choice.

    hfopt optimize MODEL_DIR --train_file train.tsv --eval_file dev.tsv --max_drop 0.01 --time_budget 1h \
        --output_dir OUT [--objective latency_b16] [--config optimize.yaml]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..optimize import OptimizeConfig, optimize
from ..run import exit_code, recipe_main

__all__ = ["main", "parse", "parser"]

COMMAND_KEYS = ("model_dir", "output_dir")
YAML_ONLY = ("space", "pipeline")


def parser() -> argparse.ArgumentParser:
    """One flag per `OptimizeConfig` field (but the YAML-only space and pipeline), MODEL_DIR, --output_dir and
    --config."""
    p = argparse.ArgumentParser(prog="hfopt optimize", description=__doc__.splitlines()[0])
    p.add_argument("model_dir", nargs="?", help="the fine-tuned model folder to compress (the original, the teacher)")
    p.add_argument("--output_dir", help="where the chosen model, the trials and the search's state go")
    p.add_argument("--config", help="a YAML file (the flags' names, plus space: and pipeline:); flags override it")
    for f in dataclasses.fields(OptimizeConfig):
        if f.name in YAML_ONLY:
            continue
        kind = str(f.type)
        number = float if "float" in kind else int if "int" in kind else None
        p.add_argument(f"--{f.name}", default=argparse.SUPPRESS, help=f.metadata["help"],
                       **({"type": number} if number else {}),
                       **({"choices": f.metadata["choices"]} if "choices" in f.metadata else {}))  # fmt: skip
    return p


def parse(argv: list[str] | None) -> tuple[str, str, OptimizeConfig]:
    """(model_dir, output_dir, config): the YAML's values, then the flags given on the command line."""
    from ..args import read_yaml_config

    p = parser()
    args = vars(p.parse_args(argv))
    values = {}
    if args.get("config"):
        known = {f.name for f in dataclasses.fields(OptimizeConfig)} | set(COMMAND_KEYS)
        values = read_yaml_config(args.pop("config"), known)
    args.pop("config", None)
    values.update({k: v for k, v in args.items() if v is not None or k not in COMMAND_KEYS})
    for key in COMMAND_KEYS:
        if not values.get(key):
            p.error(f"{'MODEL_DIR' if key == 'model_dir' else '--output_dir'} is required (a flag or a YAML key)")
    model_dir, output_dir = str(values.pop("model_dir")), str(values.pop("output_dir"))
    return model_dir, output_dir, OptimizeConfig(**values)


@recipe_main
def _main(argv: list[str] | None):
    model_dir, output_dir, config = parse(argv)
    result = optimize(model_dir, config, output_dir)
    print(result.files["optimize.md"].read_text())
    if not result.met and result.trials and all(r["status"] == "failed" for r in result.trials):
        print(f"error: every trial failed; the first: {result.trials[0]['error'].splitlines()[0]} (all in "
              f"{output_dir}/trials.csv)", file=sys.stderr)  # fmt: skip
        raise SystemExit(1)
    if not result.met:
        closest = result.closest
        rows = " on the screening rows" if closest and closest["status"] == "screened out" else ""
        where = f"; the closest, trial {closest['trial']}, lost {closest['loss']:.4f}{rows}" if closest else ""
        kept = f" (its model is in {output_dir}/closest_model)" if closest else ""
        budget, relative = config.budget
        print(f"error: no trial met the budget ({'max_relative_drop' if relative else 'max_drop'} {budget:g}) on the "
              f"selection data{where}{kept}; the front is in {output_dir}/optimize.md", file=sys.stderr)  # fmt: skip
        raise SystemExit(1)
    return result


def main(argv: list[str] | None = None) -> int:
    """The entry point of `hfopt optimize`: 0 with a model within the budget, 1 without one, 2 for a mistake."""
    return exit_code(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
