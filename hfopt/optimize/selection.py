"""The data `hfopt optimize` decides on: `--selection_file`, or a share of `--train_file` held out (seeded) and
written to `OUT/data/`, so that training never sees the rows the search selects on.

Example::

    train_file, selection_file = carve_selection(config, "classification", Path("out/data"))
    screen_file = screening_file(selection_file, 500, 2000, 42, "classification", Path("out/data"))
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from ..errors import InputError
from ..run import folder_swap, write_json_atomic

logger = logging.getLogger(__name__)

__all__ = ["carve_selection", "screening_file"]

RECORD = "carved.json"
SCREEN = "screen.jsonl"


def carve_selection(config, task: str, folder: Path) -> tuple[str, str]:
    """(train file, selection file) of the search: the given ones, or train_file split in two. A plain text file
    (causal LM) is split at a line, its last `selection_fraction` of lines selecting (text runs on); any other
    file's rows are shuffled with the pipeline's seed and written as JSON lines. A rerun reuses the split."""
    if config.selection_file:
        return config.train_file, config.selection_file
    from ..pipeline.fingerprint import source_fingerprint

    seed = config.pipeline.get("seed", 42)
    key = {"train_file": source_fingerprint(config.train_file), "fraction": config.selection_fraction, "seed": seed}
    text = Path(config.train_file).suffix == ".txt"
    names = ("train.txt", "selection.txt") if text else ("train.jsonl", "selection.jsonl")
    try:
        if json.loads((folder / RECORD).read_text()) == key and all((folder / n).is_file() for n in names):
            return str(folder / names[0]), str(folder / names[1])
    except (OSError, ValueError):
        pass
    with folder_swap(folder) as staging:
        if text:
            _split_text(config.train_file, config.selection_fraction, staging / names[0], staging / names[1])
        else:
            _split_rows(config.train_file, config.selection_fraction, seed, task, staging / names[0],
                        staging / names[1])  # fmt: skip
        write_json_atomic(staging / RECORD, key)
    logger.info("Selection data: %s of %s, held out in %s.", f"{config.selection_fraction:.0%}", config.train_file,
                folder)  # fmt: skip
    return str(folder / names[0]), str(folder / names[1])


def _split_text(path: str, fraction: float, train: Path, selection: Path) -> None:
    lines = Path(path).read_text(encoding="utf-8").splitlines(keepends=True)
    cut = len(lines) - math.ceil(len(lines) * fraction)
    if cut < 1 or cut >= len(lines):
        raise InputError(f"train_file {path} has {len(lines)} line(s): too few to hold out a selection part; "
                         "give --selection_file")  # fmt: skip
    train.write_text("".join(lines[:cut]), encoding="utf-8")
    selection.write_text("".join(lines[cut:]), encoding="utf-8")


def _split_rows(path: str, fraction: float, seed: int, task: str, train: Path, selection: Path) -> None:
    rows = _read_rows(path, "train_file", task)
    held_out = math.ceil(len(rows) * fraction)
    if held_out < 1 or held_out >= len(rows):
        raise InputError(f"train_file {path} has {len(rows)} row(s): too few to hold out "
                         f"{fraction:.0%} for selection; give --selection_file")  # fmt: skip
    parts = rows.train_test_split(test_size=held_out, seed=seed)
    parts["train"].to_json(str(train), lines=True, force_ascii=False)
    parts["test"].to_json(str(selection), lines=True, force_ascii=False)


def screening_file(selection_file: str, rows: int, used: int, seed: int, task: str, folder: Path) -> str:
    """The file of the rows a trial is screened on, before the rest: a plain text itself (its first `rows` are
    read; text runs on), or a seeded sample of `rows` of the `used` first rows of a table (those the search decides
    on), written to `folder/screen.jsonl`, so that a selection file sorted by label does not screen on one label."""
    if Path(selection_file).suffix == ".txt":
        return selection_file
    table = _read_rows(selection_file, "selection_file", task)
    table = table.select(range(min(used, len(table))))
    if len(table) > rows:
        table = table.shuffle(seed=seed).select(range(rows))
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / (SCREEN + ".partial")
    table.to_json(str(partial), lines=True, force_ascii=False)
    partial.replace(folder / SCREEN)
    return str(folder / SCREEN)


def _read_rows(path: str, role: str, task: str):
    """The rows of a data file (a Dataset), checked as the task's files are."""
    from ..data import LM_EXTENSIONS, TABLE_EXTENSIONS
    from ..data.files import load_data_file

    return load_data_file(path, f"{role} {path}", LM_EXTENSIONS if task == "causal_lm" else TABLE_EXTENSIONS, None)
