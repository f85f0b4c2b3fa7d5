"""`hfopt compress` (and recipes/compress.py): the compression pipeline (`hfopt.pipeline.compress`) on a fine-tuned
model of any task: parse the flags (one per `CompressionConfig` field) and the YAML (`--config`), call, print.

    hfopt compress MODEL_DIR --eval_file dev.csv --output_dir OUT [--config pipeline.yaml] [--prune_heads 0.4] ...
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from transformers.hf_argparser import string_to_bool

from ..pipeline import CompressionConfig, compress, load_config_file
from ..pipeline.config import TRAINING_STAGES
from ..run import exit_code, recipe_main

__all__ = ["main", "parse", "parser"]

COMMAND_KEYS = ("model_dir", "output_dir")


def parser() -> argparse.ArgumentParser:
    """One flag per `CompressionConfig` field (its help and choices), plus MODEL_DIR, --output_dir and --config."""
    p = argparse.ArgumentParser(prog="hfopt compress", description=__doc__.splitlines()[0])
    p.add_argument("model_dir", nargs="?", help="a fine-tuned model folder (from_pretrained, or written by hfopt)")
    p.add_argument("--output_dir", help="where the compressed model, the stages and the report go")
    p.add_argument("--config", help="a pipeline YAML file (keys: the flags' names); flags override it")
    for part in CompressionConfig.PARTS:
        group = p.add_argument_group(part._argument_group_name)
        for f in dataclasses.fields(part):
            _add_flag(group, f)
    return p


def _add_flag(group, f: dataclasses.Field) -> None:
    kind, extra = str(f.type), {"help": f.metadata["help"], "choices": f.metadata.get("choices")}
    if f.name == "onnx":
        extra.update(nargs="*", metavar="STAGE")
    elif f.name == "augment_stages":
        extra.update(nargs="+", choices=TRAINING_STAGES)
    elif f.name == "compare":
        extra.update(action="append", metavar="NAME=DIR")
    elif kind == "bool":
        extra.update(nargs="?", const=True, type=string_to_bool)
    elif kind.startswith("list"):
        extra.update(nargs="+", type=int if "int" in kind else str)
    elif kind.startswith(("int", "float")):
        extra.update(type=int if kind.startswith("int") else float)
    group.add_argument(f"--{f.name}", default=argparse.SUPPRESS, **{k: v for k, v in extra.items() if v is not None})


def parse(argv: list[str] | None) -> tuple[str, str, CompressionConfig]:
    """(model_dir, output_dir, config): the YAML's values, then the flags given on the command line."""
    p = parser()
    args = vars(p.parse_args(argv))
    values = {}
    if args.get("config"):
        known = set(CompressionConfig.owners()) | set(COMMAND_KEYS)
        values = load_config_file(args.pop("config"), known)
    args.pop("config", None)
    if "compare" in args and "compare" in values:
        args["compare"] = list(values["compare"]) + args["compare"]
    values.update({k: v for k, v in args.items() if v is not None or k not in COMMAND_KEYS})
    for key in COMMAND_KEYS:
        if not values.get(key):
            p.error(f"{'MODEL_DIR' if key == 'model_dir' else '--output_dir'} is required (a flag or a YAML key)")
    if "eval_file" not in values:
        p.error("--eval_file is required (a flag or a YAML key)")
    model_dir, output_dir = str(values.pop("model_dir")), str(values.pop("output_dir"))
    return model_dir, output_dir, CompressionConfig(**values)


@recipe_main
def _main(argv: list[str] | None) -> dict:
    model_dir, output_dir, config = parse(argv)
    return compress(model_dir, config, output_dir, print_report=True).report


def main(argv: list[str] | None = None) -> int:
    """The entry point of `hfopt compress`: exit code 0, or 2 with one line for a mistake."""
    return exit_code(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
