"""Benchmark: how much compressed SST-2 models lose against their teacher on the 2,400 training sentences held out
whole (bench/optimize_sst2.py decides on them, all of them unless told --selection_rows) and on the dev sentences
(on which it reports), each loss with its paired standard error, and the difference of the two losses with its
own (the two sets share no row: the errors add in quadrature). Run after compress_chain_sst2.py (and
optimize_sst2.py, for its rows):

    python bench/heldout_vs_dev_sst2.py [[LABEL=]MODEL_DIR ...]

Scores the chain's student, recovered and int8 models, the students in the search's stage cache, its chosen (or
closest) model, and any model folders given (each labelled with its depth and training, from its records, after
LABEL when given: "student of blocks 0, 2, 5=OUT/stages/01_student"). A search keeps a budget on dev only as far as
the losses on the two sets agree: this table says how far they do. Writes bench/results/heldout_vs_dev_sst2.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from common import RESULTS, ROOT, shared_file, table, trained_on, write_results  # noqa: I001


def models(extra: list[str]) -> dict[str, Path]:
    """Label → model folder, for the folders that exist; each label says how the model was trained, from its
    own records."""
    chain = RESULTS / "compress_chain_sst2"
    search = RESULTS / "optimize_sst2"
    found = {
        "chain: student": chain / "chain/stages/01_student",
        "chain: pruned, recovered": chain / "chain/stages/05_recover",
        "chain: int8 (its final model)": chain / "chain/model",
        "chain: 70% of heads pruned, recovered": chain / "harsh_distill/stages/02_recover",
    }
    for stage in sorted(search.glob("stages/student-*")):  # the students of the search (of each, if resumed)
        found[f"search: student {stage.name.split('-')[-1]}"] = stage
    for kept in ("model", "closest_model"):
        if (search / kept / "config.json").is_file():  # PyTorch or ONNX Runtime
            found[f"search: its {'chosen' if kept == 'model' else 'closest'} model"] = search / kept
    found = {f"{label} ({how_trained(path)})": path for label, path in found.items() if path.is_dir()}
    for given in extra:
        label, path = given.split("=", 1) if "=" in given and not Path(given).is_dir() else ("given", given)
        if not Path(path).is_dir():
            raise SystemExit(f"{path}: no such model folder")
        found[f"{label} ({how_trained(Path(path))})"] = Path(path)
    return found


def how_trained(path: Path) -> str:
    """A model folder's depth and, for a training stage, its objective, epochs and steps (from its stage.json)."""
    words = []
    try:
        words.append(f"{json.loads((path / 'config.json').read_text())['num_hidden_layers']} blocks")
    except (OSError, ValueError, KeyError):
        pass
    try:
        training = json.loads((path / "stage.json").read_text())["training"]
        epochs = f"{training['epochs']:g} epoch" + ("s" if training["epochs"] != 1 else "")
        words.append(f"{training['objective']} {epochs}, {training['steps']} steps")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return "; ".join(words) or "no record"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="more compressed model folders to score, each as [LABEL=]FOLDER")
    options = parser.parse_args()

    from hfopt.compression.io import load_compressed
    from hfopt.compression.onnx import EXPORT_RECORD, load_onnx
    from hfopt.compression.tasks import load_task
    from hfopt.metrics import paired_drop
    from hfopt.pipeline import load_source

    work = RESULTS / "compress_chain_sst2"
    teacher = work / "teacher"
    if not all(path.is_file() for path in (teacher / "all_results.json", work / "sentences.tsv", work / "train.tsv")):
        raise SystemExit("run bench/compress_chain_sst2.py first: its teacher and held-out sentences are scored here")
    if not trained_on(teacher, (work / "train.tsv").read_text(encoding="utf-8").splitlines()):
        raise SystemExit(f"the teacher in {teacher} was not trained on {work / 'train.tsv'} (whose sentences are held "
                         "out): run bench/compress_chain_sst2.py again")  # fmt: skip
    scored = models(options.models)  # a folder given that is not there: one line before any work
    original, tokenizer, _ = load_source(str(teacher))
    held_out = work / "selection.tsv"  # the sentences the last search decided on (all held out, unless told fewer)
    held_out = held_out if held_out.is_file() else work / "sentences.tsv"
    files = {"held_out": held_out, "dev": shared_file("sst2", "dev.tsv")}
    tasks = {name: load_task("classification", original, tokenizer, str(f), str(teacher)) for name, f in files.items()}
    base = {name: task.right_rows(original) for name, task in tasks.items()}
    rows = [{"model": "teacher (MiniLM-L6, fp32)", **{f"{n}_accuracy": float(r.mean()) for n, r in base.items()}}]
    for label, path in scored.items():
        model = load_onnx(path, spinning=False) if (path / EXPORT_RECORD).is_file() else load_compressed(path).eval()
        row = {"model": label, "path": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)}
        for name, task in tasks.items():
            right = task.right_rows(model)
            drop, se = paired_drop(base[name], right)
            row.update({f"{name}_accuracy": float(right.mean()), f"{name}_drop": drop * 100, f"{name}_se": se * 100})
        row["gap"] = row["held_out_drop"] - row["dev_drop"]
        row["gap_se"] = math.hypot(row["held_out_se"], row["dev_se"])
        rows.append(row)
        print(row, flush=True)
    columns = [
        ("model", "model", "s"),
        ("held_out_accuracy", "held-out acc.", ".4f"),
        ("held_out_drop", "held-out loss (pt)", "+.2f"),
        ("held_out_se", "± SE", ".2f"),
        ("dev_accuracy", "dev acc.", ".4f"),
        ("dev_drop", "dev loss (pt)", "+.2f"),
        ("dev_se", "± SE", ".2f"),
        ("gap", "held-out − dev (pt)", "+.2f"),
        ("gap_se", "± SE", ".2f"),
    ]
    lines = [
        f"Accuracy lost against the teacher, in points, on the {len(base['held_out'])} training sentences held out "
        f"whole (bench/optimize_sst2.py decides on them) and the {len(base['dev'])} dev sentences; standard errors "
        "paired row by row (only rows where exactly one of the model and the teacher is right move a loss)",
        "",
        table(rows, columns),
    ]
    payload = {"files": {name: str(path) for name, path in files.items()}, "rows": rows}
    write_results("heldout_vs_dev_sst2", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
