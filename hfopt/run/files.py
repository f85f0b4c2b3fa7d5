"""Writing without ever leaving a half-written file or folder: a temporary twin in the same folder, then a rename.

Example::

    write_json_atomic("out/all_results.json", results)
    with folder_swap("out/model") as staging:     # build the new folder in `staging`
        model.save_pretrained(staging)             # the old out/model stays until this has finished
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["folder_size", "folder_swap", "save_figure_atomic", "write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text to path through a temporary file in the same folder and a rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """`write_text_atomic` for JSON, indented, keys in insertion order (a report keeps its stages in chain order)."""
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


@contextlib.contextmanager
def folder_swap(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside `path`; when the block ends without an error, the staging folder
    replaces `path` (the old one is moved aside first and deleted last). On an error the staging folder is
    deleted and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.new."))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
        os.replace(path, old / path.name)
    os.replace(staging, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def folder_size(path: str | os.PathLike) -> int:
    """Bytes of every file under path."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def save_figure_atomic(figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Lay out a matplotlib figure, write it to `path` (PNG) through a temporary file, and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=dpi)
    plt.close(figure)
    tmp.replace(path)
    return path
