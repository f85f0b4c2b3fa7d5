"""Benchmark: how instruction/chat examples become rows, on the bundled instruction demo (recipes/data/instruction,
a GPT-2 of 2 layers trained from scratch as in recipes/configs/gpt_instruction_demo.yaml): `--packing none`
(one padded example per row), `blocks` (concatenated and cut: attention crosses examples) and `padding_free`
(whole examples packed by best-fit decreasing, positions restarting per example). The loss is on the assistant
turns only in every mode. Each mode sees the same examples (the whole training file, `--epochs` times) in the
same number of optimizer steps: its batch size is its number of rows divided by the steps. Reports training
tokens/s (real tokens, not padding), the padding share of the computed positions, and the final perplexity on
the validation completions (the same exact token-level computation for every mode).

Mode `trl` (with the `bench` extra: `pip install -e ".[bench]"`) trains the same model on the same examples with
TRL's `SFTTrainer`: packing by best-fit decreasing into rows of `--block_size` tokens, padding-free batches, loss on
the assistant turns (the same template, its assistant turns marked with `{% generation %}`), the same optimizer,
schedule and steps. Its final perplexity is measured by the same function as hfopt's modes, and the mean training
loss of `padding_free` and `trl` are comparable: both average over the same assistant tokens.

    python bench/sft_packing.py [--steps 150] [--epochs 2] [--train_rows 3000] [--modes none blocks padding_free trl]
                                [--seeds 0 1 2]

With several seeds (model initialisation and data order), the table holds each mode's mean ± standard deviation
over them, so that a difference between modes can be set against the spread of seeds; the JSON keeps every run.

Writes bench/results/sft_packing.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import math
import time

from common import ROOT, table, write_results

DEMO = ROOT / "recipes" / "data" / "instruction"
SPREAD = ("train_seconds", "tokens_per_second", "train_loss", "completion_perplexity")  # mean ± sd over seeds
COLUMNS = [
    ("packing", "packing", ""),
    ("seeds", "seeds", "d"),
    ("rows", "rows", "d"),
    ("batch_size", "rows/step", "d"),
    ("steps", "steps", "d"),
    ("train_seconds", "train s", ""),
    ("tokens_per_second", "real tokens/s", ""),
    ("padding_share", "padding", ".1%"),
    ("train_loss", "mean train loss", ""),
    ("completion_perplexity", "completion ppl", ""),
]
FORMATS = {"train_seconds": ".1f", "tokens_per_second": ",.0f", "train_loss": ".4f", "completion_perplexity": ".3f"}


def summary(runs: list[dict]) -> dict:
    """One mode's row: the first seed's rows, steps and padding, and mean ± sd over seeds of times, loss, perplexity."""
    import statistics

    row = {**runs[0], "seeds": len(runs)}
    for key in SPREAD:
        values = [run[key] for run in runs]
        text = format(statistics.mean(values), FORMATS[key])
        row[key] = text + (f" ± {format(statistics.stdev(values), FORMATS[key])}" if len(values) > 1 else "")
    return row


def completion_perplexity(model, rows, collator, batch_size: int = 32) -> float:
    """exp(mean cross-entropy over every completion token of rows): the same for every training mode."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum"
            )
            total, count = total + loss.item(), count + int(labels.ne(-100).sum())
    return math.exp(total / count)


def training_arguments(name: str, batch_size: int, options, config_class=None):
    """The settings every mode shares; TRL's SFTConfig is given the same (its own defaults differ: bf16 and
    gradient checkpointing on)."""
    from transformers import TrainingArguments

    settings = dict(
        output_dir=str(options.work / name),
        max_steps=options.steps,
        per_device_train_batch_size=batch_size,
        learning_rate=options.learning_rate,
        warmup_steps=0.05,
        lr_scheduler_type="linear",
        logging_steps=max(1, options.steps // 5),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=options.seed,
        data_seed=options.seed,
        bf16=False,
        gradient_checkpointing=False,
    )
    return (config_class or TrainingArguments)(**settings)


def fresh_model(tokenizer, options):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(options.seed)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=128, n_positions=options.block_size, vocab_size=len(tokenizer))
    config.bos_token_id = config.eos_token_id = config.pad_token_id = tokenizer.eos_token_id
    return GPT2LMHeadModel(config)


def timed(trainer, rows, batch_size: int, packing: str, evaluation, padded) -> dict:
    """Train; the row of the table. Rows are stored unpadded: the padding of a mode is what its batches add
    (one pass over the loader before training)."""
    real = sum(len(ids) for ids in rows["input_ids"])
    computed = sum(batch["input_ids"].numel() for batch in trainer.get_train_dataloader())
    per_epoch_batches = math.ceil(len(rows) / batch_size)
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    steps = trainer.state.global_step
    return {
        "packing": packing,
        "rows": len(rows),
        "batch_size": batch_size,
        "steps": steps,
        "train_seconds": seconds,
        "tokens_per_second": real / per_epoch_batches * steps / seconds,
        "padding_share": 1 - real / computed,
        "train_loss": output.training_loss,
        "completion_perplexity": completion_perplexity(trainer.model, evaluation, padded),
    }


def measure_trl(raw, tokenizer, options, evaluation, padded) -> dict:
    """The same training through TRL's SFTTrainer (packing="bfd": padding-free rows, positions restarting per
    example; assistant-only loss marked by the template's generation tags)."""
    from trl import SFTConfig, SFTTrainer

    from hfopt.data import CHAT_TEMPLATES

    marked = CHAT_TEMPLATES["simple"].replace(
        "Assistant: {{ message['content'] }}{{ eos_token }}\n",
        "Assistant:{% generation %} {{ message['content'] }}{{ eos_token }}\n{% endgeneration %}",
    )
    if marked == CHAT_TEMPLATES["simple"]:
        raise SystemExit("the simple chat template changed: mark its assistant turn for TRL again")
    trl_tokenizer = copy.deepcopy(tokenizer)
    trl_tokenizer.chat_template = marked

    def trainer(batch_size: int):
        args = training_arguments("trl", batch_size, options, SFTConfig)
        args.packing, args.packing_strategy, args.max_length = True, "bfd", options.block_size
        args.assistant_only_loss, args.dataset_num_proc = True, None
        return SFTTrainer(
            model=fresh_model(tokenizer, options),
            args=args,
            train_dataset=raw["train"].select_columns(["messages"]),
            processing_class=trl_tokenizer,
        )

    rows = trainer(1).train_dataset  # packed by TRL; the batch size follows from its number of rows
    batch_size = max(1, math.ceil(len(rows) * options.epochs / options.steps))
    sft = trainer(batch_size)
    return timed(sft, sft.train_dataset, batch_size, "trl", evaluation, padded)


def measure(packing: str, raw, tokenizer, options) -> dict:
    from transformers import Trainer

    from hfopt.data import DataSources, packed_collator, seq2seq_collator, tokenize_for_sft

    sources = DataSources({"train": "train", "validation": "validation"})
    evaluation = tokenize_for_sft(raw, tokenizer, "messages", options.block_size, sources, "none")["validation"]
    if packing == "trl":
        padded = seq2seq_collator(tokenizer, training_arguments("trl", 1, options))
        return measure_trl(raw, tokenizer, options, evaluation, padded)
    rows = tokenize_for_sft(raw, tokenizer, "messages", options.block_size, sources, packing)
    batch_size = max(1, math.ceil(len(rows["train"]) * options.epochs / options.steps))
    args = training_arguments(packing, batch_size, options)
    padded = seq2seq_collator(tokenizer, args)
    collator = packed_collator(tokenizer) if packing == "padding_free" else padded
    model = fresh_model(tokenizer, options)
    trainer = Trainer(model=model, args=args, train_dataset=rows["train"], data_collator=collator)
    return timed(trainer, rows["train"], batch_size, packing, evaluation, padded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--train_rows", type=int, default=3000)
    parser.add_argument("--block_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="model initialisation and data order")
    parser.add_argument("--modes", nargs="+", default=["none", "blocks", "padding_free"])
    options = parser.parse_args()
    options.work = ROOT / "outputs" / "bench_sft_packing"

    import torch

    from hfopt.data import example_texts, load_raw_datasets, use_chat_template
    from hfopt.tokenization import train_byte_level_bpe

    torch.set_num_threads(max(1, torch.get_num_threads()))

    class Files:  # the DataArguments fields load_raw_datasets reads
        dataset_name = None
        train_file = str(DEMO / "train.jsonl")
        validation_file = str(DEMO / "validation.jsonl")
        test_file = None
        validation_split_percentage = 10.0
        max_train_samples = options.train_rows
        max_eval_samples = None
        max_predict_samples = None

    raw, _ = load_raw_datasets(Files())
    tokenizer = train_byte_level_bpe(example_texts(raw["train"], "messages"), vocab_size=1000)
    use_chat_template(tokenizer, "simple")
    results = []
    for seed in options.seeds:  # seeds outermost: machine drift does not line up with one mode
        options.seed = seed
        for mode in options.modes:
            results.append({**measure(mode, raw, tokenizer, options), "seed": seed})
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in results[-1].items()})
    rows = [summary([r for r in results if r["packing"] == mode]) for mode in options.modes]
    markdown = table(rows, COLUMNS)
    write_results("sft_packing", {"options": {k: str(v) for k, v in vars(options).items()}, "rows": results}, markdown)


if __name__ == "__main__":
    main()
