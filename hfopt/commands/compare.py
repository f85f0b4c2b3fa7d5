"""`hfopt compare STUDY.yaml` (and recipes/compare.py): run a strategy study and write its tables and plots;
`hfopt compare --report OUT` rebuilds them from finished runs without training.

    hfopt compare recipes/studies/sentiment_strategies.yaml [--output_dir OUT] [--dry_run] [--fail_fast]
                  [--start_fresh] [--parallel N] [--executor local|slurm]

A rerun into the same folder skips finished runs and resumes unfinished ones, only for the same study: an edited
study (other variants' settings, seeds, data) stops with one line naming the differences. Exit code 0 when every
run finished, 1 when some failed (after the others ran and the report was written), 2 for a mistake.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ..errors import InputError
from ..run import exit_code, recipe_main

__all__ = ["main", "parser"]


def _boolean(value: str) -> bool:
    if value.lower() in ("true", "yes", "1"):
        return True
    if value.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"true or false, got '{value}'")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hfopt compare", description=__doc__.splitlines()[0])
    p.add_argument("study", nargs="?", help="the study file (recipe, variants, seeds)")
    p.add_argument("--output_dir", default=None, help="where runs, tables and plots go (default: the study's)")
    p.add_argument("--dry_run", action="store_true", help="print the runs and their resolved configs, run nothing")
    p.add_argument("--fail_fast", action="store_true", help="stop at the first failed run")
    p.add_argument(
        "--start_fresh",
        nargs="?",
        const="true",
        default="false",
        type=_boolean,
        help="remove the runs and report of an earlier study in --output_dir and run every run again",
    )
    p.add_argument("--report", metavar="OUT", default=None, help="rebuild the report of a study run in OUT")
    p.add_argument(
        "--parallel",
        type=int,
        default=None,
        metavar="N",
        help="run N runs at once, each on its share of the machine: its cores (pinned, one thread per core) or "
        "its GPUs (default: the study's `parallel`, 1)",
    )
    p.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default=None,
        help="local: the runs on this machine; slurm: each run a task of one Slurm job array, with the study's "
        "slurm: settings (default: the study's executor, local)",
    )
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    return p


def _report(study, root: Path) -> None:
    from ..hardware import cpu_info
    from ..study.report import collect_runs, write_report
    from ..study.runner import load_record

    records = {run.name: load_record(root, run) for run in study.runs(root)}
    write_report(study, collect_runs(study, records, root), root, machine=cpu_info())


def _share_line(share) -> str:
    if share.gpus is not None:
        return f"GPU {','.join(share.gpus)}"
    return f"CPUs {','.join(map(str, share.cpus))} ({share.threads} core(s)), port {share.port}"


@recipe_main
def _main(argv: list[str] | None) -> None:
    from ..study.executor import machine_shares
    from ..study.runner import check_study_dir, run_study
    from ..study.spec import load_study

    args = parser().parse_args(argv)
    if args.report:
        root = Path(args.report)
        if not (root / "study.yaml").is_file():
            raise InputError(f"{root} holds no study (no study.yaml): give the output folder of a study run")
        _report(load_study(root / "study.yaml", check_flags=False), root)
        print((root / "study.md").read_text())
        return
    if not args.study:
        raise InputError("name the study file: hfopt compare STUDY.yaml")
    study = load_study(args.study)
    root = Path(args.output_dir) if args.output_dir else study.output_dir
    runs = study.runs(root)
    check_study_dir(study, root, args.start_fresh)
    for config in study.resolved.values():  # a shared search's storage, opened before any run starts
        if config.get("hp_search_storage"):
            from ..study.search import open_storage

            open_storage(config["hp_search_storage"])
    executor = args.executor or study.executor
    if executor == "slurm":  # a mistake is one line here, before the dry run and before any job is submitted
        from ..study.slurm import check_slurm

        if args.parallel:
            raise InputError("--parallel is for the local executor: on Slurm, set slurm: slurm_array_parallelism")
        check_slurm(study.slurm)
    parallel = study.parallel if args.parallel is None else args.parallel
    # a mistake is one line here, before the dry run (on Slurm the runs' resources are Slurm's, not this machine's)
    shares = [] if executor == "slurm" else machine_shares(parallel, study.gpus_per_run)
    if args.dry_run:
        for run in runs:
            print(f"# {run.name}: {' '.join(run.command('python'))}")
        for name, config in study.resolved.items():
            print(f"\n# {name}\n{yaml.safe_dump(config, sort_keys=True)}")
        print(f"{len(runs)} runs ({len(study.variants)} variants × {len(study.seeds)} seeds) into {root}")
        if len(shares) > 1:
            print(f"{len(shares)} at a time: " + "; ".join(_share_line(share) for share in shares))
        return
    records = run_study(
        study,
        root,
        fail_fast=args.fail_fast,
        progress=not args.no_progress,
        start_fresh=args.start_fresh,
        parallel=args.parallel,
        executor=executor,
    )
    _report(study, root)
    print((root / "study.md").read_text())
    failed = [name for name, record in records.items() if record.status in ("failed", "killed")]
    not_run = [name for name, record in records.items() if record.status in ("pending", "submitted")]
    if failed or not_run:
        finished = len(records) - len(failed) - len(not_run)
        names = [f"{name} (killed)" if records[name].status == "killed" else name for name in failed]
        line = f"error: {len(failed)} of {len(records)} runs failed: {', '.join(names)} (their logs: {root}/logs)"
        if not_run:
            line += f"; --fail_fast left {len(not_run)} not run: {', '.join(not_run)}"
        print(f"{line}; the report covers the {finished} that finished", file=sys.stderr, flush=True)
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    """The entry point of `hfopt compare`: exit code 0; 1 when runs failed (named on the last line); 2 with one
    line for a mistake."""
    return exit_code(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
