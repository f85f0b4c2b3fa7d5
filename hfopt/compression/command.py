"""`hfopt compress` (and recipes/compress.py): apply a pruning/quantization chain to a fine-tuned classifier,
write the compressed model and the compression report.

    hfopt compress MODEL_DIR --eval_file dev.csv [--prune_heads 0.4] [--prune_ffn 0.3] [--prune_magnitude 0.5]
                   [--quantize dynamic_int8 [--quantize_embeddings]] --output_dir OUT
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
from pathlib import Path

import torch

from ..errors import InputError
from .io import save_compressed
from .pruning import check_amount, prune_ffn, prune_heads, prune_magnitude
from .quantization import METHODS, quantize
from .report import build_report, write_report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hfopt compress", description=__doc__.splitlines()[0])
    p.add_argument("model_dir", help="a fine-tuned sequence-classification model folder (from_pretrained)")
    p.add_argument("--eval_file", required=True, help="csv/tsv/json(l) with a text and a label column")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--text_column_names", nargs="+", default=None)
    p.add_argument("--label_column_name", default=None)
    p.add_argument("--max_eval_samples", type=int, default=None)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--prune_heads", type=float, default=None, help="fraction of attention heads to remove")
    p.add_argument("--prune_ffn", type=float, default=None, help="fraction of feed-forward neurons to remove")
    p.add_argument("--prune_magnitude", type=float, default=None, help="fraction of linear weights to zero")
    p.add_argument("--quantize", choices=METHODS, default=None)
    p.add_argument("--quantize_embeddings", action="store_true", help="int8 embedding tables (dynamic_int8)")
    p.add_argument("--latency_repeats", type=int, default=20)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        run(parser().parse_args(argv))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run(args) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..args import DataArguments
    from ..data import LabelSpace, check_texts, detect_classification_columns, load_raw_datasets

    for name in ("prune_heads", "prune_ffn", "prune_magnitude"):
        if getattr(args, name) is not None:
            check_amount(getattr(args, name), name)
    if not Path(args.model_dir, "config.json").is_file():
        raise InputError(f"model_dir {args.model_dir} is not a model folder (no config.json)")
    data_args = DataArguments(validation_file=args.eval_file, text_column_names=args.text_column_names,
                              label_column_name=args.label_column_name, max_eval_samples=args.max_eval_samples)
    raw = load_raw_datasets(data_args)
    columns = detect_classification_columns(raw, data_args)
    check_texts(raw, columns.text)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(args.model_dir).eval()
    if any(p.is_cuda for p in model.parameters()):
        model = model.cpu()
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    data_labels = LabelSpace.from_datasets(raw, columns.label)
    labels_space = LabelSpace(names=names, string_labels=data_labels.string_labels)
    labels_space.check(raw["validation"][columns.label], f"eval_file {args.eval_file}", columns.label)
    rows = raw["validation"]
    texts = [" ".join(str(row[c]) for c in columns.text) for row in rows]
    labels = [labels_space.to_id(v) for v in rows[columns.label]]

    output = Path(args.output_dir)
    stages_dir = output / "stages"
    stages, saved = {"original": copy.deepcopy(model)}, {}
    saved["original"] = save_compressed(model, stages_dir / "original")
    importance_batches = None
    if args.prune_heads or args.prune_ffn:
        encoded = tokenizer(texts[:256], padding=True, truncation=True, max_length=args.max_seq_length,
                            return_tensors="pt")
        importance_batches = [{k: v[i: i + 32] for k, v in {**encoded, "labels": torch.tensor(labels[:256])}.items()}
                              for i in range(0, min(256, len(texts)), 32)]
    chain = [("prune_heads", args.prune_heads, lambda m: prune_heads(m, args.prune_heads, importance_batches)),
             ("prune_ffn", args.prune_ffn, lambda m: prune_ffn(m, args.prune_ffn, importance_batches)),
             ("prune_magnitude", args.prune_magnitude, lambda m: prune_magnitude(m, amount=args.prune_magnitude)),
             ("quantize", args.quantize, lambda m: quantize(m, args.quantize, embeddings=args.quantize_embeddings))]
    for name, value, apply in chain:
        if value:
            apply(model)
            label = f"{name}_{value}"
            stages[label] = copy.deepcopy(model)
            saved[label] = save_compressed(model, stages_dir / label)
    report = build_report(stages, saved, tokenizer, texts, labels, repeats=args.latency_repeats)
    report["chain"] = [f"{name}={value}" for name, value, _ in chain if value]
    save_compressed(model, output / "model", tokenizer)
    write_report(report, output)
    shutil.rmtree(stages_dir)
    print((output / "compression_report.md").read_text())
    return report
