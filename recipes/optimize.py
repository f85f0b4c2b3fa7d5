"""The fastest (or smallest) compressed model within an accuracy budget: the same as the `hfopt optimize` command.

    python recipes/optimize.py outputs/finetune_bert --train_file train.csv --eval_file dev.csv --max_drop 0.01 \
        --time_budget 1h --output_dir outputs/optimized
    python recipes/optimize.py --config recipes/searches/sst2.yaml       # a search from YAML

Trials (optuna, in OUT/optimize.journal: a killed search resumes) draw a student depth, vocabulary pruning, head and
FFN pruning, recovery, a number format and a runtime; each is scored on selection data (a held-out part of the
training file, or --selection_file) and timed beside the original. Writes OUT/model (the chosen model and its
report on the eval file), OUT/trials.{csv,json}, OUT/optimize.{md,png}.
"""

import sys

from hfopt.commands.optimize import main

if __name__ == "__main__":
    sys.exit(main())
