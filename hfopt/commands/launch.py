"""`hfopt launch`: `accelerate launch` with the same arguments, plus what accelerate leaves out: the
accelerate config is checked first, and a recipe's one-line error ends the launch with the recipe's exit code
(2 for a mistake) and no launcher traceback, as does Ctrl-C (130).

    hfopt launch --config_file accelerate_configs/multi_gpu.yaml recipes/finetune_bert.py --num_train_epochs 1
"""

from __future__ import annotations

import logging
import subprocess
import sys

from ..accelerate_config import check_accelerate_config
from ..errors import InputError

__all__ = ["main"]


def config_file_of(args: list[str]) -> str | None:
    """The value of `--config_file` among accelerate launch arguments (before the script), if given."""
    for i, arg in enumerate(args):
        if arg.endswith(".py") and not arg.startswith("-"):
            break  # the script's own arguments follow
        if arg.startswith("--config_file="):
            return arg.split("=", 1)[1]
        if arg == "--config_file":
            return args[i + 1] if i + 1 < len(args) else ""
    return None


def _exit_code(err: BaseException) -> int:
    failures = getattr(err, "failures", None)  # torch.distributed.elastic's ChildFailedError
    if failures:
        codes = [f.exitcode for f in failures.values() if getattr(f, "exitcode", None)]
        return next((c for c in codes if c > 0), 1)
    return getattr(err, "returncode", 1) or 1


def main(argv: list[str]) -> int:
    """Check the accelerate config, then run `accelerate launch` in this process; return the launched program's
    exit code."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    config = config_file_of(argv)
    try:
        if config is not None:
            check_accelerate_config(config)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args = launch_command_parser().parse_args(argv)
    # accelerate's "values not passed ... defaults used" block is dropped by hfopt.quiet (unless --verbose): the
    # defaults it lists (one process per GPU or one on CPU, fp32, no dynamo) are the right ones for a recipe.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the recipe printed its line
    try:
        launch_command(args)
    except subprocess.CalledProcessError as err:
        return _exit_code(err)
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        if type(err).__name__ != "ChildFailedError":
            raise
        return _exit_code(err)
    return 0
