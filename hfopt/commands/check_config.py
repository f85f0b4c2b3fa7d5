"""`hfopt check-config FILE.yaml`: an accelerate config that accelerate can load, with values that can run.

hfopt check-config accelerate_configs/deepspeed_zero2.yaml
"""

from __future__ import annotations

import sys

from ..accelerate_config import check_accelerate_config
from ..errors import InputError

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """`hfopt check-config PATH`: print `PATH: ok`, or one line and exit code 2."""
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: hfopt check-config ACCELERATE_CONFIG.yaml", file=sys.stderr)
        return 2
    try:
        check_accelerate_config(argv[0])
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{argv[0]}: ok")
    return 0
