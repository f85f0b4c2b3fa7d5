"""Loading data from the hub or local files (csv, tsv, json, jsonl, parquet, arrow, txt) and the checks every
task shares: files that exist and parse, splits that are not empty, text columns that hold text.

Every check fails fast with an `InputError` that names the file (or hub split) and the flag at fault.

Example::

    raw, sources = load_raw_datasets(data_args, seed=training_args.seed)
    check_texts(raw, ["sentence"], sources)
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import datasets
from datasets import DatasetDict

from ..errors import InputError, raised_in

if TYPE_CHECKING:
    from ..args import DataArguments

logger = logging.getLogger(__name__)

__all__ = [
    "TABLE_EXTENSIONS",
    "DataSources",
    "check_text_dtype",
    "check_texts",
    "load_data_file",
    "load_raw_datasets",
    "local_data_files",
    "tokenize_splits",
]

# file extension -> (datasets builder, extra load_dataset kwargs)
FILE_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {}),
    # GLUE-style TSV: tabs separate fields and quotes are ordinary characters.
    ".tsv": ("csv", {"sep": "\t", "quoting": 3}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".arrow": ("arrow", {}),
    ".txt": ("text", {}),
}
BINARY_EXTENSIONS = (".parquet", ".arrow")
# the readers of data files: their errors mean the file is at fault (anything else is a bug and keeps its traceback)
READING_LIBRARIES = ("datasets", "pyarrow", "pandas", "json", "csv", "fsspec", "multiprocess", "huggingface_hub")
TABLE_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".arrow")
SPLIT_FLAGS = {"train": "train_file", "validation": "validation_file", "test": "test_file"}
LIMIT_FLAGS = {"train": "max_train_samples", "validation": "max_eval_samples", "test": "max_predict_samples"}


@dataclass
class DataSources:
    """How messages name each split of a dataset: the file and flag it came from, or the hub dataset.

    Returned next to the datasets by `load_raw_datasets`; it stays true when the datasets are filtered or
    mapped into new objects.

    Args:
        names: `{split: description}`, e.g. `{"train": "train_file data/train.csv"}`.

    Example::

        raw, sources = load_raw_datasets(data_args)
        raise InputError(f"{sources.of('train')} has no column 'label'")
    """

    names: dict[str, str] = field(default_factory=dict)

    def of(self, split: str) -> str:
        """The description of `split`, e.g. "train_file data/train.csv" (or "split 'x'" when unknown)."""
        return self.names.get(split, f"split '{split}'")


def local_data_files(data_args: DataArguments) -> dict[str, str]:
    """{flag: path} of the local data files a run reads (train_file, validation_file, test_file)."""
    return {flag: getattr(data_args, flag) for flag in SPLIT_FLAGS.values() if getattr(data_args, flag, None)}


def load_raw_datasets(
    data_args: DataArguments,
    seed: int = 42,
    cache_dir: str | None = None,
    token: str | None = None,
    extensions: Sequence[str] = TABLE_EXTENSIONS,
) -> tuple[DatasetDict, DataSources]:
    """Load `dataset_name` from the hub, or `train_file`/`validation_file`/`test_file` from disk.

    When no validation split exists, `validation_split_percentage` of train is carved out (seeded).
    `max_*_samples` keep the first N rows of each split. Empty splits are an error that names the flag.
    Returns the datasets and their `DataSources`.
    """
    sources = DataSources()
    if data_args.dataset_name:
        raw = load_hub_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir, token)
        if not isinstance(raw, DatasetDict):
            raw = DatasetDict({"train": raw})
        if "validation" not in raw and "validation_matched" in raw:  # MNLI
            raw["validation"] = raw.pop("validation_matched")
        sources.names = {split: f"split '{split}' of dataset {data_args.dataset_name}" for split in raw}
    else:
        files = {split: getattr(data_args, flag) for split, flag in SPLIT_FLAGS.items() if getattr(data_args, flag)}
        if not files:
            raise InputError("no data given: pass --dataset_name or --train_file (and --validation_file)")
        raw = DatasetDict()
        for split, path in files.items():
            sources.names[split] = f"{SPLIT_FLAGS[split]} {path}"
            raw[split] = load_data_file(path, sources.names[split], extensions, cache_dir)

    if "validation" not in raw and "train" in raw:
        fraction = data_args.validation_split_percentage / 100
        held_out = math.ceil(len(raw["train"]) * fraction)
        if held_out < 1 or held_out >= len(raw["train"]):
            raise InputError(
                f"{sources.of('train')} has {len(raw['train'])} row(s): too few to hold out "
                f"{data_args.validation_split_percentage:g}% for validation; give --validation_file"
            )
        parts = raw["train"].train_test_split(test_size=held_out, seed=seed)
        raw["train"], raw["validation"] = parts["train"], parts["test"]
        sources.names["validation"] = (
            f"the {data_args.validation_split_percentage:g}% of {sources.of('train')} held out for validation"
        )
        logger.info("No validation split given: held out %d rows of train.", len(raw["validation"]))

    for split, flag in LIMIT_FLAGS.items():
        limit = getattr(data_args, flag)
        if split in raw and limit is not None:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    for split in raw:
        if len(raw[split]) == 0:
            raise InputError(f"{sources.of(split)} is empty")
    return raw, sources


def load_hub_dataset(name: str, config_name: str | None = None, cache_dir: str | None = None, token=None):
    """`datasets.load_dataset(name, config_name)`; a name that cannot be fetched (offline, a typo, no access) or
    a config the dataset lacks is one line naming it."""
    try:
        return datasets.load_dataset(name, config_name, cache_dir=cache_dir, token=token)
    except (ConnectionError, FileNotFoundError) as err:
        if os.path.isdir(name):
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise InputError(f"dataset_name {name} could not be read: {first}") from None
        offline = datasets.config.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true")
        why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else "offline, or no such name"
        said = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise InputError(
            f"dataset_name {name} cannot be reached or found on the Hugging Face hub ({why}): check the name for a "
            "typo, or give local files with --train_file" + (f" (the hub library said: {said})" if said else "")
        ) from None
    except ValueError as err:  # a config name the dataset does not have, and other refusals of the builder
        first = str(err).strip().splitlines()[0][:300]
        where = f"dataset_name {name}" + (f" (dataset_config_name {config_name})" if config_name else "")
        raise InputError(f"{where} could not be loaded: {first}") from None


def load_data_file(path: str, description: str, extensions: Sequence[str], cache_dir: str | None = None):
    """Load one local file as a Dataset, after checking it is a file of a supported type, not empty, UTF-8 text
    (for text formats) and, for `.json`, rows rather than a single object."""
    ext = os.path.splitext(path)[1].lower()
    if os.path.isdir(path):
        raise InputError(
            f"{description} is a folder, not a file: name one {'/'.join(extensions)} file "
            "(a folder of data files goes in --dataset_name)"
        )
    if not os.path.isfile(path):
        raise InputError(f"{description} does not exist")
    if ext not in extensions:
        raise InputError(f"{description} has unsupported type '{ext or '(none)'}'; use one of {', '.join(extensions)}")
    if ext not in BINARY_EXTENSIONS:
        if _is_blank(path):
            raise InputError(f"{description} is empty" + (" (only blank lines)" if os.path.getsize(path) else ""))
        check_utf8(path, description)
    if ext == ".json":
        _check_json_rows(path, description)
    builder, kwargs = FILE_FORMATS[ext]
    try:
        return datasets.load_dataset(builder, data_files={"data": path}, split="data", cache_dir=cache_dir, **kwargs)
    except Exception as err:  # datasets wraps parser errors in several types
        if not raised_in(err, *READING_LIBRARIES):
            raise  # not the file's fault: a bug keeps its traceback
        if "corresponds to no data" in str(err) or isinstance(err, StopIteration):
            raise InputError(f"{description} is empty") from None
        cause = err.__cause__ or err
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise InputError(f"{description} could not be read as {ext[1:]}: {message}") from None


def _is_blank(path: str, chunk_size: int = 1 << 16) -> bool:
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            if chunk.strip():
                return False
    return True


def _check_json_rows(path: str, description: str, max_bytes: int = 64 << 20) -> None:
    """A .json file must hold a list of rows or JSON lines; one object (a row, or a dict of columns) is refused."""
    if os.path.getsize(path) > max_bytes:
        return
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        value, end = json.JSONDecoder().raw_decode(text.lstrip())
    except json.JSONDecodeError:
        return  # the loader reports syntax errors
    if isinstance(value, dict) and not text.lstrip()[end:].strip():
        keys = ", ".join(list(value)[:5])
        raise InputError(
            f"{description} holds one JSON object (keys: {keys}), not rows: write a list of "
            "objects [{...}, {...}] or JSON lines (one object per line)"
        )


def check_utf8(path: str, description: str, chunk_size: int = 1 << 20) -> None:
    """Raise InputError naming the line of the first byte sequence in path that is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                line += chunk[: err.start].count(b"\n")
                raise InputError(
                    f"{description} is not UTF-8 text (first bad byte on line {line}); re-save it as UTF-8"
                ) from None
            line += chunk.count(b"\n")


def check_texts(raw: DatasetDict, text_columns: Sequence[str], sources: DataSources) -> None:
    """Fail when a text column holds something other than text (numbers, lists), or any row has an empty or
    missing text; the message gives the count and the first row's index."""
    check_text_dtype(raw, text_columns, sources)
    for split, dataset in raw.items():
        for column in text_columns:
            values = dataset[column]
            bad = [i for i, v in enumerate(values) if v is None or not v.strip()]
            if bad:
                raise InputError(
                    f"{sources.of(split)}: {len(bad)} row(s) with empty '{column}', "
                    f"first at row index {bad[0]} (0-based, header not counted)"
                )


def check_text_dtype(raw: DatasetDict, text_columns: Sequence[str], sources: DataSources) -> None:
    """Fail when a text column holds numbers, lists or anything else that is not text."""
    for split, dataset in raw.items():
        for column in text_columns:
            feature = dataset.features.get(column)
            dtype = getattr(feature, "dtype", None)
            if dtype not in ("string", "large_string", "null"):
                raise InputError(
                    f"{sources.of(split)}: column '{column}' holds {dtype or type(feature).__name__} values, not "
                    "text; name the text column with --text_column_names"
                )


def tokenize_splits(raw: DatasetDict, encode, num_proc: int | None = None, batch_size: int = 1000) -> DatasetDict:
    """`encode` (a batched map function) applied to every split, the raw columns dropped."""
    return DatasetDict(
        {
            split: dataset.map(
                encode,
                batched=True,
                batch_size=batch_size,
                num_proc=num_proc,
                remove_columns=dataset.column_names,
                desc=f"Tokenizing {split}",
            )
            for split, dataset in raw.items()
        }
    )
