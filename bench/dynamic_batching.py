"""Benchmark: how training batches are formed, on `finetune_bert.py` (MiniLM-L6, SST-2): random fixed-size
batches (`--batching samples`), fixed-size batches of similar-length rows (`--batching length`, the default),
and token-budget batches (`--batching tokens --max_tokens_per_batch 1024`). Samples/s, padding and dev
accuracy. Needs the demo extra and ../shared/data/sst2.

    python bench/dynamic_batching.py [--train_rows 8000] [--epochs 1]

The rows `recipe_samples`, `recipe` and `recipe_tokens` of bench/recipe_vs_baselines.py, alone; writes
bench/results/dynamic_batching.{json,md}.
"""

from common import sst2_sample, table, write_results
from recipe_vs_baselines import COLUMNS, measure, parser


def padding_share(options) -> dict[str, float]:
    """The share of padding in the tokens each batching computes (batch rows × longest row), one epoch."""
    from transformers import AutoTokenizer

    from hfopt.data import LengthBatchSampler
    from hfopt.models import demo_model_path

    tokenizer = AutoTokenizer.from_pretrained(demo_model_path())
    texts = [line.split("\t")[0] for line in sst2_sample(options.train_rows, seed=0)[1:]]
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=128)["input_ids"]]
    samplers = {
        "recipe_samples": LengthBatchSampler(lengths, batch_size=options.batch_size, seed=options.seed),
        "recipe": LengthBatchSampler(lengths, batch_size=options.batch_size, seed=options.seed, group_by_length=True),
        "recipe_tokens": LengthBatchSampler(lengths, max_tokens=1024, seed=options.seed),
        "run_glue": None,
    }
    shares = {}
    for name, sampler in samplers.items():
        batches = [[i] for i in range(len(lengths))] if sampler is None else list(sampler)
        computed = sum(len(b) * (128 if sampler is None else max(lengths[i] for i in b)) for b in batches)
        shares[name] = 1 - sum(lengths) / computed
    return shares


def main() -> None:
    options = parser(variants=("recipe_samples", "recipe", "recipe_tokens")).parse_args()
    shares = padding_share(options)
    rows = measure(options.variants, options, "dynamic_batching")
    for row in rows:
        row["vs_samples"] = row["samples_per_second"] / rows[0]["samples_per_second"]
        row["padding"] = shares[row["variant"]]
    columns = [*COLUMNS[:5], ("padding", "padding share", ".2f"), ("vs_samples", "× random batches", ".2f")]
    heading = f"Batching on SST-2 ({options.train_rows} phrases, {options.epochs:g} epoch, batch {options.batch_size})"
    payload = {"options": vars(options), "rows": rows, "padding_share_run_glue": shares["run_glue"]}
    write_results("dynamic_batching", payload, f"{heading}\n\n{table(rows, columns)}")


if __name__ == "__main__":
    main()
