"""Benchmark: bf16 mixed precision on the CPU against fp32, training `finetune_bert.py` (MiniLM-L6, SST-2): the
same run launched with and without `--config_file accelerate_configs/cpu_bf16.yaml`. Needs the demo extra and
../shared/data/sst2. bf16 autocast pays off on CPUs with native bf16 (AVX512-BF16, AMX); the table's machine line
says which this one has.

    python bench/cpu_bf16.py [--train_rows 8000] [--epochs 1]

The rows `recipe` and `recipe_bf16` of bench/recipe_vs_baselines.py, alone; writes bench/results/cpu_bf16.{json,md}.
"""

from common import table, write_results
from recipe_vs_baselines import COLUMNS, measure, parser


def main() -> None:
    options = parser(variants=("recipe", "recipe_bf16")).parse_args()
    rows = measure(options.variants, options, "cpu_bf16")
    for row in rows:
        row["vs_fp32"] = row["samples_per_second"] / rows[0]["samples_per_second"]
    columns = [*COLUMNS[:5], ("vs_fp32", "× fp32", ".2f")]
    heading = f"CPU bf16 autocast vs fp32: finetune_bert.py, SST-2 {options.train_rows} phrases, {options.epochs:g} ep."
    write_results("cpu_bf16", {"options": vars(options), "rows": rows}, f"{heading}\n\n{table(rows, columns)}")


if __name__ == "__main__":
    main()
