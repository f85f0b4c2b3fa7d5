"""Run a strategy study and write its tables and plots: the same as the `hfopt compare` command.

    python recipes/compare.py recipes/studies/sentiment_strategies.yaml [--output_dir OUT] [--dry_run]
    python recipes/compare.py --report OUT          # rebuild the tables and plots of a finished study

Each run is its own `hfopt launch` subprocess in OUT/runs/<variant>/seed-<n>; running the command again skips
finished runs and resumes unfinished ones. Writes OUT/study.md, study.csv, study.json, plots/ and tensorboard/.
"""

import sys

from hfopt.commands.compare import main

if __name__ == "__main__":
    sys.exit(main())
