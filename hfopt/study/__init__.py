"""Strategy studies: run a recipe's variants side by side and report what each buys (`hfopt compare`), and
hyperparameter search.

Example::

    from hfopt.study import load_study, run_study, collect_runs, write_report
    study = load_study("recipes/studies/sentiment_strategies.yaml")
    records = run_study(study, study.output_dir)
    write_report(study, collect_runs(study, records, study.output_dir), study.output_dir)
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and the API reference (griffe reads these); at run time, __getattr__ below
    from .report import collect_runs, write_report
    from .runner import RunRecord, run_study
    from .search import search_hyperparameters
    from .spec import Run, Study, Variant, load_study

# Each name's submodule, imported on first use: a Slurm task unpickles `hfopt.study.slurm.run_logged`, which
# needs only the standard library, and should not pay for the report's and runner's transformers import.
_SUBMODULES = {
    "Run": "spec",
    "RunRecord": "runner",
    "Study": "spec",
    "Variant": "spec",
    "collect_runs": "report",
    "load_study": "spec",
    "run_study": "runner",
    "search_hyperparameters": "search",
    "write_report": "report",
}


def __getattr__(name):
    if name in _SUBMODULES:
        value = globals()[name] = getattr(importlib.import_module(f".{_SUBMODULES[name]}", __name__), name)
        return value
    raise AttributeError(f"module 'hfopt.study' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_SUBMODULES})


__all__ = [
    "Run",
    "RunRecord",
    "Study",
    "Variant",
    "collect_runs",
    "load_study",
    "run_study",
    "search_hyperparameters",
    "write_report",
]
