"""The `hfopt` console script.

    hfopt env                                   versions of hfopt and its libraries, for bug reports
    hfopt check-config accelerate_configs/X.yaml   load an accelerate config the way accelerate does
    hfopt launch [accelerate launch arguments]  check the --config_file, then run `accelerate launch`
    hfopt compress MODEL_DIR --eval_file F ...  prune/quantize and write the compression report
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def check_accelerate_config(path: str) -> None:
    """Raise InputError with one line when path is not an accelerate config that accelerate can load."""
    from accelerate.commands.config.config_args import load_config_from_file

    from .errors import InputError

    if not os.path.isfile(path):
        raise InputError(f"accelerate config {path} does not exist")
    try:
        load_config_from_file(path)
    except Exception as err:  # yaml errors, unknown enum values, missing keys: accelerate raises many types
        detail = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"accelerate config {path} does not parse: {detail[:300]}") from None


def main(argv: list[str] | None = None) -> int:
    from .errors import InputError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["launch"]:
        return launch(argv[1:])
    if argv[:1] == ["compress"]:
        from .compression.command import main as compress

        return compress(argv[1:])
    parser = argparse.ArgumentParser(prog="hfopt", description="hfopt command line")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("env", help="print the versions of hfopt and its libraries as JSON")
    check = commands.add_parser("check-config", help="check that an accelerate config loads")
    check.add_argument("path")
    commands.add_parser("launch", help="check --config_file, then run accelerate launch with the same arguments")
    commands.add_parser("compress", help="prune and/or quantize a fine-tuned model and write the report")
    args = parser.parse_args(argv)
    try:
        if args.command == "env":
            from .run import library_versions

            print(json.dumps(library_versions(), indent=2))
        elif args.command == "check-config":
            check_accelerate_config(args.path)
            print(f"{args.path}: ok")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def launch(args: list[str]) -> int:
    """`accelerate launch` with the accelerate config checked first (one clear line instead of a traceback)."""
    from .errors import InputError

    config = next((a.split("=", 1)[1] for a in args if a.startswith("--config_file=")), None)
    if config is None and "--config_file" in args:
        index = args.index("--config_file")
        config = args[index + 1] if index + 1 < len(args) else ""
    try:
        if config is not None:
            check_accelerate_config(config)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    os.execvp(sys.executable, [sys.executable, "-m", "accelerate.commands.launch", *args])


if __name__ == "__main__":
    sys.exit(main())
