"""The `hfopt` console script.

    hfopt env        # versions of hfopt and the libraries it runs on, for bug reports
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hfopt", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("env", help="print the versions of hfopt and its libraries as JSON")
    args = parser.parse_args(argv)
    if args.command == "env":
        from .run import library_versions

        print(json.dumps(library_versions(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
