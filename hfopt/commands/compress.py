"""`hfopt compress` (and recipes/compress.py): apply a compression chain to a fine-tuned model of any task
(classification, causal LM, seq2seq), write the compressed model and the compression report.

    hfopt compress MODEL_DIR --eval_file dev.csv --output_dir OUT [--task auto] [--prune_vocabulary train.csv]
                   [--share_layers 3] [--prune_heads 0.4] [--prune_ffn 0.3] [--prune_magnitude 0.5]
                   [--quantize dynamic_int8 [--quantize_embeddings]] [--compare NAME=DIR ...]
                   [--onnx [onnx onnx_int8 onnx_int8_static] | --backend onnxruntime]
                   [--calibration_file FILE] [--calibration_samples 128]

Stages run in that order. `--compare qat_int8=RUN/int8` adds a folder written by a recipe's `--qat int8` (or any
other model folder) to the same report, timed with the others.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
from pathlib import Path

from ..errors import InputError
from ..run import exit_code, folder_swap, recipe_main
from ..run.output_dir import check_apart

logger = logging.getLogger(__name__)


__all__ = ["main", "parser", "run"]


def parser() -> argparse.ArgumentParser:
    from ..compression.onnx import ONNX_STAGES
    from ..compression.quantization import METHODS
    from ..compression.sharing import INITS
    from ..compression.tasks import TASKS

    p = argparse.ArgumentParser(prog="hfopt compress", description=__doc__.splitlines()[0])
    p.add_argument("model_dir", help="a fine-tuned model folder (from_pretrained, or one written by hfopt)")
    p.add_argument(
        "--eval_file",
        required=True,
        help="classification: csv/tsv/json(l)/parquet with text and label columns; causal_lm: txt or "
        "json(l) text; seq2seq: json(l) translation pairs or one column per language",
    )
    p.add_argument("--output_dir", required=True)
    p.add_argument("--task", choices=("auto", *TASKS), default="auto", help="auto: from the model's architecture")
    p.add_argument("--tokenizer_name", default=None, help="the tokenizer, if the model folder has none")
    p.add_argument("--text_column_names", nargs="+", default=None)
    p.add_argument("--label_column_name", default=None)
    p.add_argument("--source_lang", default=None, help="seq2seq: source language key or column")
    p.add_argument("--target_lang", default=None, help="seq2seq: target language key or column")
    p.add_argument("--max_eval_samples", type=int, default=None, help="use only the first N eval rows")
    p.add_argument("--max_new_tokens", type=int, default=16, help="tokens generated per latency measurement")
    p.add_argument(
        "--share_layers",
        type=int,
        default=None,
        help="merge the transformer blocks into N groups of adjacent, similar blocks sharing one set of weights",
    )
    p.add_argument("--share_layers_init", choices=INITS, default="average", help="a shared group's weights")
    p.add_argument(
        "--prune_vocabulary",
        default=None,
        metavar="FILE",
        help="classification: keep only the embedding rows of the tokens FILE's texts use (the training file, "
        "in the eval file's format); other tokens embed as the unknown token",
    )
    p.add_argument("--prune_heads", type=float, default=None, help="fraction of attention heads to remove")
    p.add_argument("--prune_ffn", type=float, default=None, help="fraction of feed-forward neurons to remove")
    p.add_argument(
        "--importance_file",
        default=None,
        metavar="FILE",
        help="labelled examples (the eval file's format) that score heads and neurons for --prune_heads / "
        "--prune_ffn; default: the eval file (use training data to keep the eval data out of the choice)",
    )
    p.add_argument("--prune_magnitude", type=float, default=None, help="fraction of linear weights to zero")
    p.add_argument("--quantize", choices=METHODS, default=None)
    p.add_argument("--quantize_embeddings", action="store_true", help="int8 embedding tables (dynamic_int8)")
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also measure another model folder (e.g. a QAT or distilled model) in the same report",
    )
    p.add_argument(
        "--onnx",
        nargs="*",
        choices=ONNX_STAGES,
        default=None,
        metavar="STAGE",
        help="also export the last float stage to ONNX Runtime: onnx (fp32, fused), onnx_int8 (dynamic), "
        "onnx_int8_static (calibrated); no names: all that the task supports (needs the onnx extra)",
    )
    p.add_argument(
        "--backend",
        choices=("pytorch", "onnxruntime"),
        default="pytorch",
        help="onnxruntime: also every ONNX Runtime stage the task supports (the same as a bare --onnx)",
    )
    p.add_argument(
        "--calibration_file",
        default=None,
        help="inputs for onnx_int8_static's calibration, in the eval_file's format (default: the eval_file)",
    )
    p.add_argument(
        "--calibration_samples", type=int, default=None, help="rows of the calibration file to use (default 128)"
    )
    p.add_argument("--latency_repeats", type=int, default=20)
    return p


CHAIN = ("prune_vocabulary", "share_layers", "prune_heads", "prune_ffn", "prune_magnitude", "quantize")


def stage_labels(args) -> list[str]:
    """The names of the report's rows this command makes (before any --compare): original, each chain stage that
    runs, and every ONNX stage name."""
    from ..compression.onnx import ONNX_STAGES

    labels = ["original"]
    for name in CHAIN:
        value = getattr(args, name)
        if value:
            labels.append(name if name == "prune_vocabulary" else f"{name}_{value}")
    return labels + list(ONNX_STAGES)


def check_arguments(args) -> None:
    from ..compression.pruning import check_amount

    for name in ("prune_heads", "prune_ffn", "prune_magnitude"):
        if getattr(args, name) is not None:
            check_amount(getattr(args, name), name)
    for name in ("max_eval_samples", "max_new_tokens", "latency_repeats", "calibration_samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"{name} must be ≥ 1, got {value}")
    if args.share_layers is not None and args.share_layers < 1:
        raise InputError(f"share_layers must be ≥ 1, got {args.share_layers}")
    if args.share_layers and (args.prune_heads or args.prune_ffn):
        raise InputError("--share_layers does not combine with --prune_heads / --prune_ffn (blocks of one shape)")
    if args.quantize_embeddings and args.quantize != "dynamic_int8":
        raise InputError("--quantize_embeddings goes with --quantize dynamic_int8")
    taken = set(stage_labels(args))
    for item in args.compare:
        if "=" not in item or not item.split("=", 1)[0]:
            raise InputError(f"--compare takes NAME=DIR, got '{item}'")
        name = item.split("=", 1)[0]
        if name in taken:
            raise InputError(
                f"--compare {item}: '{name}' already names a row of the report (one of {', '.join(sorted(taken))}), "
                "whose figures this one would replace; give each --compare its own NAME"
            )
        taken.add(name)
    if args.backend == "onnxruntime" and args.onnx is None:
        args.onnx = []  # every stage the task supports
    static = args.onnx is not None and (not args.onnx or "onnx_int8_static" in args.onnx)
    for name in ("calibration_file", "calibration_samples"):
        if getattr(args, name) is not None and not static:
            raise InputError(f"--{name} goes with --onnx onnx_int8_static")
    for name in ("prune_vocabulary", "importance_file"):
        if getattr(args, name) is not None and not Path(getattr(args, name)).is_file():
            raise InputError(f"{name} {getattr(args, name)} does not exist")
    if args.importance_file and not (args.prune_heads or args.prune_ffn):
        raise InputError("--importance_file goes with --prune_heads / --prune_ffn")
    if args.calibration_file is not None and not Path(args.calibration_file).is_file():
        raise InputError(f"calibration_file {args.calibration_file} does not exist")
    if args.onnx is not None:
        from ..compression.onnx import require_onnx

        require_onnx()
    check_output_dir(args)


def check_output_dir(args) -> None:
    """The output folder is apart from everything compress reads (no compressed copy over its own model), and
    is a folder, not a file."""
    inputs = {
        "model_dir": args.model_dir,
        "--eval_file": args.eval_file,
        "--tokenizer_name": args.tokenizer_name,
        "--prune_vocabulary": args.prune_vocabulary,
        "--importance_file": args.importance_file,
        "--calibration_file": args.calibration_file,
    }
    for item in args.compare:
        name, folder = item.split("=", 1)
        inputs[f"--compare {name}"] = folder
    check_apart(args.output_dir, inputs)
    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise InputError(f"--output_dir {args.output_dir} is a file, not a folder")


def load_for_compression(model_dir: str, task: str, tokenizer_name: str | None = None):
    """(model, tokenizer, task) of a model folder: a plain one (its task head must be in the checkpoint) or one
    written by `save_compressed`."""
    from transformers import AutoConfig, AutoTokenizer

    from ..compression.io import RECIPE_FILE, load_compressed
    from ..compression.tasks import detect_task, task_auto_class
    from ..models import check_model_source, check_tokenizer_files, load_trained_model

    check_model_source(model_dir, "model_dir")
    config = AutoConfig.from_pretrained(model_dir)
    task = detect_task(config) if task == "auto" else task
    tokenizer_source = tokenizer_name or model_dir
    check_tokenizer_files(tokenizer_source, "tokenizer_name" if tokenizer_name else "model_dir")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    if (Path(model_dir) / RECIPE_FILE).is_file():
        model = load_compressed(model_dir)
    else:
        model = load_trained_model(task_auto_class(task), model_dir, role="model_dir")
    return model.cpu().eval(), tokenizer, task


def run(args) -> dict:
    from ..compression.io import save_compressed
    from ..compression.onnx import export_stages, load_onnx, report_section, stage_names
    from ..compression.pruning import prune_ffn, prune_heads, prune_magnitude
    from ..compression.quantization import quantize
    from ..compression.report import build_report, weights_size, write_report
    from ..compression.sharing import share_layers
    from ..compression.tasks import load_task
    from ..compression.vocabulary import prune_vocabulary

    check_arguments(args)
    model, tokenizer, task_name = load_for_compression(args.model_dir, args.task, args.tokenizer_name)
    task = load_task(
        task_name,
        model,
        tokenizer,
        args.eval_file,
        args.model_dir,
        args.text_column_names,
        args.label_column_name,
        args.source_lang,
        args.target_lang,
        args.max_eval_samples,
        args.max_new_tokens,
    )
    onnx_names = stage_names(args.onnx, task_name) if args.onnx is not None else []
    calibration = None
    if "onnx_int8_static" in onnx_names:
        calibration = load_task(
            task_name,
            model,
            tokenizer,
            args.calibration_file or args.eval_file,
            args.model_dir,
            args.text_column_names,
            args.label_column_name,
            args.source_lang,
            args.target_lang,
            args.calibration_samples or 128,
            role="calibration_file" if args.calibration_file else "eval_file",
        )
    vocabulary_texts = None
    if args.prune_vocabulary:
        if task_name != "classification":
            raise InputError(f"--prune_vocabulary is for classification models; {args.model_dir} is {task_name}")
        vocabulary_texts = load_task(
            task_name,
            model,
            tokenizer,
            args.prune_vocabulary,
            args.model_dir,
            args.text_column_names,
            args.label_column_name,
            role="prune_vocabulary",
        ).texts
    compared = {}
    for item in args.compare:
        name, folder = item.split("=", 1)
        other, other_tokenizer, _ = load_for_compression(folder, task_name, args.tokenizer_name)
        if other_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise InputError(
                f"--compare {name}={folder}: its tokenizer differs from {args.model_dir}'s, and every stage of the "
                "report is scored on the same token ids; compare models that share a tokenizer"
            )
        compared[name] = (other, folder)

    importance = None
    if args.prune_heads or args.prune_ffn:
        scorer = task
        if args.importance_file:
            scorer = load_task(
                task_name,
                model,
                tokenizer,
                args.importance_file,
                args.model_dir,
                args.text_column_names,
                args.label_column_name,
                args.source_lang,
                args.target_lang,
                1024,  # rows: importance uses the first 256 examples (or blocks)
                role="importance_file",
            )
        importance = scorer.importance_batches()
    chain = [
        ("prune_vocabulary", vocabulary_texts, lambda m: prune_vocabulary(m, tokenizer, vocabulary_texts)),
        (
            "share_layers",
            args.share_layers,
            lambda m: share_layers(m, num_groups=args.share_layers, init=args.share_layers_init),
        ),
        ("prune_heads", args.prune_heads, lambda m: prune_heads(m, args.prune_heads, importance)),
        ("prune_ffn", args.prune_ffn, lambda m: prune_ffn(m, args.prune_ffn, importance)),
        ("prune_magnitude", args.prune_magnitude, lambda m: prune_magnitude(m, amount=args.prune_magnitude)),
        ("quantize", args.quantize, lambda m: quantize(m, args.quantize, embeddings=args.quantize_embeddings)),
    ]
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output, prefix=".stages.") as scratch:
        stages, sizes = {"original": copy.deepcopy(model)}, {}
        sizes["original"] = weights_size(save_compressed(model, Path(scratch) / "original"))
        float_stage = "original"
        for name, value, apply in chain:
            if value:
                apply(model)
                label = name if name == "prune_vocabulary" else f"{name}_{value}"
                stages[label] = copy.deepcopy(model)
                sizes[label] = weights_size(save_compressed(model, Path(scratch) / label))
                float_stage = label if name != "quantize" else float_stage
        onnx_folders = {}
        if onnx_names:
            onnx_folders = export_stages(
                stages[float_stage],
                tokenizer,
                onnx_names,
                Path(scratch) / "onnx",
                task_name,
                calibration.metric_batches if calibration else None,
            )
            for name, folder in onnx_folders.items():
                stages[name], sizes[name] = load_onnx(folder, spinning=False), weights_size(folder)
        for name, (other, folder) in compared.items():
            stages[name], sizes[name] = other, weights_size(folder)
        report = build_report(stages, sizes, task, repeats=args.latency_repeats)
        for name, folder in onnx_folders.items():
            with folder_swap(output / "onnx" / name) as staging:
                for item in folder.iterdir():
                    item.replace(staging / item.name)
    if onnx_folders:
        source = calibration and f"{args.calibration_file or args.eval_file}, first {len(calibration.texts)} rows"
        report["onnx"] = report_section({n: stages[n] for n in onnx_folders}, float_stage, output / "onnx", source)
        report["notes"] = [report["onnx"]["note"]]
    report["chain"] = [name if name == "prune_vocabulary" else f"{name}={value}" for name, value, _ in chain if value]
    if vocabulary_texts:
        report["vocabulary"] = dict(
            model.config.hfopt_vocabulary,
            of=model.get_input_embeddings().num_embeddings,
            file=str(args.prune_vocabulary),
        )
    report["model_dir"] = str(args.model_dir)
    with folder_swap(output / "model") as staging:
        save_compressed(model, staging, tokenizer)
    _remove_stale_onnx(output / "onnx", set(onnx_folders))
    write_report(report, output)
    print((output / "compression_report.md").read_text())
    return report


def _remove_stale_onnx(folder: Path, kept: set[str]) -> None:
    """An earlier compress into the same output_dir may have left ONNX stages this run did not make: remove them,
    so that OUT/onnx holds only what this report describes."""
    import shutil

    from ..compression.onnx import ONNX_STAGES

    if folder.is_dir():
        for item in folder.iterdir():
            if item.is_dir() and item.name in ONNX_STAGES and item.name not in kept:
                logger.info("Removing %s: an ONNX stage of an earlier compress this one did not make.", item)
                shutil.rmtree(item)


@recipe_main
def _main(argv: list[str] | None) -> dict:
    return run(parser().parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    """The entry point of `hfopt compress`: exit code 0, or 2 with one line for a mistake."""
    return exit_code(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
