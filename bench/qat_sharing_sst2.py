"""Benchmark: quantization-aware training and weight sharing on the pretrained MiniLM-L6 and SST-2. Needs the demo
extra and ../shared/data/sst2.

    python bench/qat_sharing_sst2.py [--train_rows 20000] [--epochs 2] [--distill_epochs 3] [--repeats 50]
    python bench/qat_sharing_sst2.py --train_rows 64 --dev_rows 32 --epochs 1 --repeats 2     # a smoke run

(a) QAT: MiniLM fine-tuned in fp32 then quantized after training (PTQ, `hfopt compress --quantize dynamic_int8`),
against MiniLM fine-tuned on the same rows with the same steps and `--qat int8` (its output_dir/int8 as a
`--compare` stage of the same report): dev accuracy, size and CPU latency (batch 1 and 16, timed interleaved).
Goal: QAT int8 accuracy ≥ PTQ int8 accuracy at the same latency.

(b) Weight sharing: the fp32 model's 6 blocks merged into 3 groups that share weights (`--share_layers 3`: the
encoder's parameters halve), then distilled from the unshared fp32 model (`recipes/distill_bert.py
--student_num_layers 6 --share_layers 3`). Goal: within 2 points of the unshared model on SST-2 dev.

Prints a table and writes bench/results/qat_sharing_sst2.json (with the machine's `cpu_info()`).
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import ROOT, SST2

ENV = {  # this checkout's hfopt first, even where another one is installed
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
}


def run(command: list) -> None:
    subprocess.run([sys.executable, *map(str, command)], check=True, env=ENV, cwd=ROOT)


def recipe(name: str, args: list) -> None:
    run([ROOT / "recipes" / f"{name}.py", *args])


def encoder_parameters(model) -> int:
    """Parameters of the transformer blocks, each shared tensor counted once."""
    from hfopt.architectures import architecture

    unique = {id(p): p for _, block in architecture(model).blocks() for p in block.parameters()}
    return sum(p.numel() for p in unique.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_rows", type=int, default=20000, help="SST-2 training phrases (a fixed random sample)")
    parser.add_argument("--min_words", type=int, default=0, help="only training phrases of at least N words")
    parser.add_argument("--dev_rows", type=int, default=None, help="first N dev sentences (default: all 872)")
    parser.add_argument("--epochs", type=float, default=2, help="fine-tuning epochs (fp32 and QAT alike)")
    parser.add_argument("--distill_epochs", type=float, default=None, help="distillation epochs (default: --epochs)")
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--share_layers", type=int, default=3, help="groups the 6 blocks are merged into")
    parser.add_argument("--repeats", type=int, default=50, help="latency rounds per model and batch size")
    parser.add_argument("--work_dir", default=str(ROOT / "bench" / "results" / "qat_sharing_sst2"))
    options = parser.parse_args()

    from common import sst2_sample
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hfopt.compression import share_layers
    from hfopt.compression.tasks import load_task
    from hfopt.hardware import cpu_info
    from hfopt.models import load_trained_model

    work = Path(options.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    train, dev = work / "train.tsv", work / "dev.tsv"
    train.write_text("\n".join(sst2_sample(options.train_rows, seed=0, min_words=options.min_words)) + "\n")
    dev_lines = (SST2 / "dev.tsv").read_text(encoding="utf-8").splitlines()
    dev.write_text("\n".join(dev_lines[: None if options.dev_rows is None else options.dev_rows + 1]) + "\n")
    common = [
        "--train_file", train, "--validation_file", dev, "--max_seq_length", "64", "--per_device_train_batch_size",
        "32", "--learning_rate", options.learning_rate, "--save_strategy", "no", "--eval_strategy", "no",
        "--disable_tqdm", "true", "--start_fresh", "true", "--seed", "0",
    ]  # fmt: skip
    seconds = {}

    # (a) fp32 → PTQ int8 against QAT → int8, on the same rows and steps
    started = time.time()
    recipe("finetune_bert", [*common, "--num_train_epochs", options.epochs, "--output_dir", work / "fp32"])
    seconds["fp32_fine_tuning"] = time.time() - started
    started = time.time()
    recipe(
        "finetune_bert", [*common, "--num_train_epochs", options.epochs, "--output_dir", work / "qat", "--qat", "int8"]
    )
    seconds["qat_fine_tuning"] = time.time() - started
    run(
        [
            "-m", "hfopt.cli", "compress", work / "fp32", "--eval_file", dev, "--output_dir", work / "ptq_vs_qat",
            "--quantize", "dynamic_int8", "--compare", f"qat_int8={work / 'qat' / 'int8'}",
            "--latency_repeats", options.repeats,
        ]
    )  # fmt: skip
    report = json.loads((work / "ptq_vs_qat" / "compression_report.json").read_text())
    renamed = {"original": "fp32", "quantize_dynamic_int8": "ptq_int8", "qat_int8": "qat_int8"}
    quantization = {name: report["stages"][stage] for stage, name in renamed.items()}

    # (b) 6 blocks → 3 shared groups, recovered by distillation from the unshared fp32 model
    started = time.time()
    recipe(
        "distill_bert",
        [
            *common, "--num_train_epochs", options.distill_epochs or options.epochs, "--output_dir",
            work / "shared", "--teacher_model_name_or_path", work / "fp32", "--student_num_layers", "6",
            "--share_layers", options.share_layers, "--alpha", "0.5", "--temperature", "2",
        ],
    )  # fmt: skip
    seconds["shared_distillation"] = time.time() - started
    distilled = json.loads((work / "shared" / "distillation_report.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(work / "fp32")
    fp32 = AutoModelForSequenceClassification.from_pretrained(work / "fp32").eval()
    untrained = copy.deepcopy(fp32)  # shared, not yet recovered: what distillation starts from
    untrained_groups = share_layers(untrained, num_groups=options.share_layers)
    student = load_trained_model(AutoModelForSequenceClassification, str(work / "shared"))
    task = load_task("classification", fp32, tokenizer, str(dev), str(work / "fp32"))
    sharing = {
        "fp32": {
            "accuracy": distilled["models"]["teacher"]["accuracy"],
            "encoder_parameters": encoder_parameters(fp32),
        },
        "shared_before_recovery": {
            "accuracy": task.evaluate(untrained)["accuracy"],
            "encoder_parameters": encoder_parameters(untrained),
        },
        "shared_distilled": {
            "accuracy": distilled["models"]["student"]["accuracy"],
            "encoder_parameters": encoder_parameters(student),
        },
    }
    for name in ("fp32", "shared_distilled"):
        model = distilled["models"]["teacher" if name == "fp32" else "student"]
        sharing[name].update(
            {k: v for k, v in model.items() if k.startswith(("latency", "speedup")) or k == "parameters"}
        )
    sharing["shared_before_recovery"]["groups"] = untrained_groups
    sharing["shared_distilled"]["groups"] = student.config.hfopt_shared_layers

    result = {
        "machine": cpu_info(),
        "threads": torch.get_num_threads(),
        "setup": {
            "train_rows": options.train_rows,
            "min_words": options.min_words,
            "dev_rows": options.dev_rows or len(dev_lines) - 1,
            "epochs": options.epochs,
            "distill_epochs": options.distill_epochs or options.epochs,
            "learning_rate": options.learning_rate,
            "latency_repeats": options.repeats,
            "share_layers": options.share_layers,
            "seconds": seconds,
        },
        "quantization": quantization,
        "sharing": sharing,
    }
    out = ROOT / "bench" / "results" / "qat_sharing_sst2.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result) + "\n")

    print(f"\n(a) quantization-aware training, {options.train_rows} rows × {options.epochs} epochs")
    print(f"{'model':10} {'dev acc':>8} {'MB':>7} {'b1 ms':>7} {'b16 ms':>7} {'b1 ×':>6} {'b16 ×':>6}")
    for name, r in quantization.items():
        print(
            f"{name:10} {r['accuracy']:8.4f} {r['size_bytes'] / 1e6:7.1f} {r['latency_b1_p50_ms']:7.2f} "
            f"{r['latency_b16_p50_ms']:7.2f} {r['speedup_b1']:6.2f} {r['speedup_b16']:6.2f}"
        )
    gain = quantization["qat_int8"]["accuracy"] - quantization["ptq_int8"]["accuracy"]
    print(f"QAT int8 − PTQ int8: {100 * gain:+.2f} points (goal ≥ 0)")
    print(f"\n(b) weight sharing, 6 blocks → {options.share_layers} groups {sharing['shared_distilled']['groups']}")
    print(f"{'model':24} {'dev acc':>8} {'encoder params':>15}")
    for name in ("fp32", "shared_before_recovery", "shared_distilled"):
        r = sharing[name]
        print(f"{name:24} {r['accuracy']:8.4f} {r['encoder_parameters']:15,}")
    gap = sharing["fp32"]["accuracy"] - sharing["shared_distilled"]["accuracy"]
    ratio = sharing["shared_distilled"]["encoder_parameters"] / sharing["fp32"]["encoder_parameters"]
    print(f"shared and distilled − fp32: {-100 * gap:+.2f} points (goal ≥ −2), encoder parameters ×{ratio:.2f}")
    print(f"{result['threads']} threads on {result['machine'].get('model', 'this CPU')}; results in {out}")


def markdown(result: dict) -> str:
    """The benchmark's two tables in Markdown, from its JSON."""
    setup, quantization, sharing = result["setup"], result["quantization"], result["sharing"]
    cpu = result["machine"]
    sets = ", ".join(k for k in ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx") if cpu.get(k)) or "none"
    lines = [
        f"(a) Quantization-aware training: MiniLM-L6, {setup['train_rows']} SST-2 phrases × {setup['epochs']} epochs, "
        f"dev {setup['dev_rows']} sentences; latency p50, all models timed interleaved.",
        "",
        "| model | dev accuracy | MB | b1 ms | b16 ms | × faster b1 | × faster b16 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in quantization.items():
        lines.append(
            f"| {name} | {r['accuracy']:.4f} | {r['size_bytes'] / 1e6:.1f} | {r['latency_b1_p50_ms']:.2f} | "
            f"{r['latency_b16_p50_ms']:.2f} | {r['speedup_b1']:.2f} | {r['speedup_b16']:.2f} |"
        )
    gain = quantization["qat_int8"]["accuracy"] - quantization["ptq_int8"]["accuracy"]
    lines += [
        "",
        f"QAT int8 − post-training int8: {100 * gain:+.2f} points (goal ≥ 0).",
        "",
        f"(b) Weight sharing: 6 blocks → {result['setup'].get('share_layers', 3)} groups (sharing: "
        f"{sharing['shared_distilled']['groups']}, every other block alone), distilled {setup['distill_epochs']} "
        "epochs from the unshared fp32 model.",
        "",
        "| model | dev accuracy | encoder parameters |",
        "|---|---|---|",
    ]
    for name in ("fp32", "shared_before_recovery", "shared_distilled"):
        r = sharing[name]
        lines.append(f"| {name} | {r['accuracy']:.4f} | {r['encoder_parameters']:,} |")
    gap = sharing["shared_distilled"]["accuracy"] - sharing["fp32"]["accuracy"]
    ratio = sharing["shared_distilled"]["encoder_parameters"] / sharing["fp32"]["encoder_parameters"]
    lines += [
        "",
        f"Shared and distilled − fp32: {100 * gap:+.2f} points (goal ≥ −2); encoder parameters ×{ratio:.2f}.",
        "",
        f"Machine: {cpu.get('model', 'this CPU')} (int8/bf16 instruction sets: {sets}), {result['threads']} threads.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
