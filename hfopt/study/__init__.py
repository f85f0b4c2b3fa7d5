"""Strategy studies: run a recipe's variants side by side and report what each buys (`hfopt compare`), and
hyperparameter search.

Example::

    from hfopt.study import load_study, run_study, collect_runs, write_report
    study = load_study("recipes/studies/sentiment_strategies.yaml")
    records = run_study(study, study.output_dir)
    write_report(study, collect_runs(study, records, study.output_dir), study.output_dir)
"""

from .report import collect_runs, write_report
from .runner import RunRecord, run_study
from .search import search_hyperparameters
from .spec import Run, Study, Variant, load_study

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
