"""The `hfopt` console script: dispatches to `hfopt.commands`, nothing more.

hfopt env                                      versions of hfopt and its libraries, and the CPU, as JSON
hfopt check-config accelerate_configs/X.yaml   check an accelerate config (loads, and its values can run)
hfopt launch [accelerate launch arguments]     accelerate launch, with the config checked and one-line errors
hfopt compress MODEL_DIR --eval_file F ...     prune/quantize a fine-tuned model and write the report
hfopt compare STUDY.yaml                       run a strategy study and write its tables and plots
hfopt optimize MODEL_DIR --max_drop 0.01 ...   the fastest compressed model within an accuracy budget

--verbose (anywhere; for launch, among the recipe's arguments) also shows the third-party warnings hfopt drops
as known to be harmless (hfopt.quiet); HFOPT_VERBOSE=1 does the same.
"""

from __future__ import annotations

import importlib
import json
import sys

COMMANDS = {
    "check-config": "hfopt.commands.check_config",
    "launch": "hfopt.commands.launch",
    "compress": "hfopt.commands.compress",
    "compare": "hfopt.commands.compare",
    "optimize": "hfopt.commands.optimize",
}


def env(argv: list[str]) -> int:
    from .hardware import cpu_info
    from .run import library_versions

    print(json.dumps({**library_versions(), "cpu": cpu_info()}, indent=2))
    return 0


def _without_verbose(argv: list[str]) -> list[str]:
    """argv without `--verbose`, `--verbose=X` and `--verbose true|false`."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--verbose":
            following = argv[i + 1] if i + 1 < len(argv) else ""
            skip = following.lower() in ("true", "false", "1", "0", "yes", "no")
            continue
        if arg.startswith("--verbose="):
            continue
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    from .quiet import is_verbose, quiet_third_party

    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = is_verbose(argv)
    quiet_third_party(verbose=verbose)
    at = next((i for i, arg in enumerate(argv) if arg in COMMANDS or arg == "env"), len(argv))
    command_args = argv[at + 1 :] if argv[at : at + 1] == ["launch"] else _without_verbose(argv[at + 1 :])
    argv = _without_verbose(argv[:at]) + argv[at : at + 1] + command_args  # launch passes --verbose to the recipe
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip().split("\n\n", 1)[1])
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "env":
        return env(rest)
    if command not in COMMANDS:
        print(f"error: unknown command '{command}'; commands: env, {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[command]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
