"""Loading data from the hub or local files, checking it before training, and tokenizing it for the recipes.

Every check fails fast with an `InputError` that names the file, split, column or row at fault.

Example::

    raw = load_raw_datasets(data_args, seed=training_args.seed)
    columns = detect_classification_columns(raw, data_args)
    labels = LabelSpace.from_datasets(raw, columns.label, num_labels=None)
"""

from __future__ import annotations

import codecs
import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import datasets
from datasets import ClassLabel, DatasetDict

from .errors import InputError

logger = logging.getLogger("hfopt")

# file extension -> (datasets builder, extra load_dataset kwargs)
FILE_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {}),
    # GLUE-style TSV: tabs separate fields and quotes are ordinary characters.
    ".tsv": ("csv", {"sep": "\t", "quoting": 3}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".txt": ("text", {}),
}
TABLE_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl")

TEXT_COLUMN_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question", "sentence"),
    ("sentence",),
    ("text",),
)
LABEL_COLUMN_CANDIDATES = ("label", "labels")
SPLIT_FILES = {"train": "train_file", "validation": "validation_file", "test": "test_file"}


def load_raw_datasets(
    data_args,
    seed: int = 42,
    cache_dir: str | None = None,
    token: str | None = None,
    extensions: Sequence[str] = TABLE_EXTENSIONS,
) -> DatasetDict:
    """Load `dataset_name` from the hub, or `train_file`/`validation_file`/`test_file` from disk.

    When no validation split exists, `validation_split_percentage` of train is carved out (seeded).
    `max_*_samples` keep the first N rows of each split. Empty splits are an error.
    """
    if data_args.dataset_name:
        raw = datasets.load_dataset(
            data_args.dataset_name, data_args.dataset_config_name, cache_dir=cache_dir, token=token
        )
        sources = {split: f"split '{split}' of dataset {data_args.dataset_name}" for split in raw}
        if "validation" not in raw and "validation_matched" in raw:  # MNLI
            raw["validation"] = raw.pop("validation_matched")
    else:
        files = {split: getattr(data_args, attr) for split, attr in SPLIT_FILES.items() if getattr(data_args, attr)}
        if not files:
            raise InputError("no data given: pass --dataset_name or --train_file (and --validation_file)")
        raw = DatasetDict()
        sources = {}
        for split, path in files.items():
            raw[split] = load_data_file(path, f"{SPLIT_FILES[split]} {path}", extensions, cache_dir)
            sources[split] = f"{SPLIT_FILES[split]} {path}"

    if "validation" not in raw and "train" in raw:
        fraction = data_args.validation_split_percentage / 100
        if not 0 < fraction < 1:
            raise InputError(f"validation_split_percentage must be in (0, 100), got {fraction * 100:g}")
        parts = raw["train"].train_test_split(test_size=fraction, seed=seed)
        raw["train"], raw["validation"] = parts["train"], parts["test"]
        sources["validation"] = f"the {fraction * 100:g}% of {sources['train']} held out for validation"
        logger.info("No validation split given: held out %d rows of train.", len(raw["validation"]))

    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_predict_samples}
    for split, limit in limits.items():
        if split in raw and limit is not None:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    for split in raw:
        if len(raw[split]) == 0:
            raise InputError(f"{source_of(raw, split)} is empty")
    raw.sources = sources  # used in error messages further on
    return raw


def source_of(raw: DatasetDict, split: str) -> str:
    """How error messages name a split: its file (or hub dataset) as `load_raw_datasets` recorded it."""
    return getattr(raw, "sources", {}).get(split, f"split '{split}'")


def load_data_file(path: str, description: str, extensions: Sequence[str], cache_dir: str | None = None):
    """Load one local file as a Dataset, after checking it exists, has a supported type and is UTF-8."""
    ext = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise InputError(f"{description} does not exist")
    if ext not in extensions:
        raise InputError(f"{description} has unsupported type '{ext or '(none)'}'; use one of {', '.join(extensions)}")
    check_utf8(path, description)
    builder, kwargs = FILE_FORMATS[ext]
    try:
        return datasets.load_dataset(builder, data_files={"data": path}, split="data", cache_dir=cache_dir, **kwargs)
    except Exception as err:  # datasets wraps parser errors in several types
        if "corresponds to no data" in str(err):
            raise InputError(f"{description} is empty") from None
        cause = err.__cause__ or err
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise InputError(f"{description} could not be read as {ext[1:]}: {message}") from None


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
                raise InputError(f"{description} is not UTF-8 text (first bad byte on line {line}); "
                                 "re-save it as UTF-8") from None
            line += chunk.count(b"\n")


@dataclass
class ClassificationColumns:
    """The text column(s) and the label column of a classification dataset."""

    text: list[str]
    label: str


def detect_classification_columns(raw: DatasetDict, data_args) -> ClassificationColumns:
    """Use the configured columns or detect them (`sentence1`+`sentence2`, `sentence`, `text`, ...; `label`).

    Every split is checked: a missing column is an error that lists the columns found.
    """
    train_split = "train" if "train" in raw else next(iter(raw))
    found = raw[train_split].column_names

    text = list(data_args.text_column_names or [])
    if not text:
        text = next((list(c) for c in TEXT_COLUMN_CANDIDATES if all(col in found for col in c)), [])
        if not text:
            raise InputError(
                f"{source_of(raw, train_split)}: no text column found among {', '.join(found)}; "
                "name it with --text_column_names"
            )
    if len(text) > 2:
        raise InputError(f"text_column_names takes one or two columns, got {len(text)}: {', '.join(text)}")

    label = data_args.label_column_name or next((c for c in LABEL_COLUMN_CANDIDATES if c in found), None)
    if label is None:
        raise InputError(
            f"{source_of(raw, train_split)}: no label column found among {', '.join(found)}; "
            "name it with --label_column_name"
        )
    for split, dataset in raw.items():
        needed = text + ([label] if split != "test" else [])
        for column in needed:
            if column not in dataset.column_names:
                raise InputError(
                    f"{source_of(raw, split)} has no column '{column}'; "
                    f"columns found: {', '.join(dataset.column_names)}"
                )
    return ClassificationColumns(text=text, label=label)


def check_texts(raw: DatasetDict, text_columns: Sequence[str]) -> None:
    """Fail when any row has an empty or missing text, with the count and the first row's index."""
    for split, dataset in raw.items():
        for column in text_columns:
            values = dataset[column]
            bad = [i for i, v in enumerate(values) if v is None or (isinstance(v, str) and not v.strip())]
            if bad:
                raise InputError(
                    f"{source_of(raw, split)}: {len(bad)} row(s) with empty '{column}', "
                    f"first at row index {bad[0]} (0-based, header not counted)"
                )


@dataclass
class LabelSpace:
    """The classes of a classification task: `names[i]` is the label of class id i.

    Example::

        labels = LabelSpace.from_datasets(raw, "label")
        model = AutoModelForSequenceClassification.from_pretrained(path, **labels.model_kwargs())
    """

    names: list[str]
    string_labels: bool

    @property
    def num_labels(self) -> int:
        return len(self.names)

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def model_kwargs(self) -> dict[str, Any]:
        """`num_labels`, `label2id` and `id2label`, for `from_pretrained` or a model config."""
        return {"num_labels": self.num_labels, "label2id": self.label2id, "id2label": dict(enumerate(self.names))}

    def to_id(self, value) -> int:
        return self.label2id[str(value)] if self.string_labels else int(value)

    @classmethod
    def from_datasets(cls, raw: DatasetDict, label_column: str, num_labels: int | None = None) -> "LabelSpace":
        """Read the label space from the data (ClassLabel names, sorted strings, or ids 0..max) and check it.

        Labels of the validation split must occur in train (string labels) or lie in [0, num_labels) (ids).
        A test split whose labels are all missing or -1 counts as unlabelled.
        """
        train_split = "train" if "train" in raw else next(iter(raw))
        feature = raw[train_split].features[label_column]
        if isinstance(feature, ClassLabel):
            space = cls(names=list(feature.names), string_labels=False)
        else:
            values = [v for v in raw[train_split][label_column]]
            if any(v is None for v in values):
                first = next(i for i, v in enumerate(values) if v is None)
                raise InputError(f"{source_of(raw, train_split)}: missing '{label_column}' at row index {first}")
            if all(isinstance(v, str) for v in values):
                space = cls(names=sorted(set(values)), string_labels=True)
            elif all(isinstance(v, int) or (isinstance(v, float) and v.is_integer()) for v in values):
                top = int(max(values))
                space = cls(names=[str(i) for i in range(max(top + 1, num_labels or 0))], string_labels=False)
            else:
                raise InputError(
                    f"{source_of(raw, train_split)}: column '{label_column}' holds {feature}; expected class ids "
                    "(0, 1, ...) or class names"
                )
        if num_labels is not None and num_labels < space.num_labels and not space.string_labels:
            space = cls(names=space.names[:num_labels], string_labels=False)
        if num_labels is not None and space.num_labels != num_labels:
            raise InputError(
                f"num_labels is {num_labels} but {source_of(raw, train_split)} has {space.num_labels} classes "
                f"({', '.join(space.names[:10])})"
            )
        for split, dataset in raw.items():
            if label_column in dataset.column_names:
                space.check(dataset[label_column], source_of(raw, split), label_column, unlabelled_ok=split == "test")
        return space

    def check(self, values: Sequence, source: str, column: str, unlabelled_ok: bool = False) -> None:
        """Raise InputError for the first label outside this space (naming the row and the value)."""
        if unlabelled_ok and all(v is None or v == -1 for v in values):
            return
        for i, value in enumerate(values):
            ok = (str(value) in self.label2id) if self.string_labels else (
                isinstance(value, (int, float)) and float(value).is_integer() and 0 <= int(value) < self.num_labels
            )
            if not ok:
                expected = ", ".join(self.names[:10]) if self.string_labels else f"0..{self.num_labels - 1}"
                raise InputError(
                    f"{source}: label {value!r} at row index {i} of column '{column}' is outside the "
                    f"{self.num_labels} classes ({expected})"
                )


def tokenize_for_classification(
    raw: DatasetDict,
    tokenizer,
    columns: ClassificationColumns,
    labels: LabelSpace,
    max_seq_length: int | None = None,
    num_proc: int | None = None,
) -> DatasetDict:
    """Tokenize the text column(s) with truncation and no padding (the collator pads per batch); map labels to ids.

    Call it inside `training_args.main_process_first()` so that one process writes the cache.
    """
    max_length = min(max_seq_length or tokenizer.model_max_length, tokenizer.model_max_length)

    def encode(batch):
        texts = [batch[c] for c in columns.text]
        encoded = tokenizer(*texts, truncation=True, max_length=max_length)
        if columns.label in batch:
            encoded["labels"] = [labels.to_id(v) if v is not None and v != -1 else -1 for v in batch[columns.label]]
        return encoded

    return DatasetDict(
        {
            split: dataset.map(
                encode, batched=True, num_proc=num_proc, remove_columns=dataset.column_names,
                desc=f"Tokenizing {split}",
            )
            for split, dataset in raw.items()
        }
    )


def padding_collator(tokenizer, training_args):
    """`DataCollatorWithPadding` padding each batch to its longest row (to a multiple of 8 under fp16/bf16)."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if _mixed_precision(training_args) else None)


# --- causal language modelling -------------------------------------------------------------------------------

LM_EXTENSIONS = (".txt", ".json", ".jsonl")


def detect_text_column(raw: DatasetDict, name: str | None = None) -> str:
    """The column holding the text: `name` if given, else `text` (what .txt files load as), else the only
    string column. Every split must have it."""
    first = "train" if "train" in raw else next(iter(raw))
    found = raw[first].column_names
    if name is None:
        strings = [c for c, f in raw[first].features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
        name = "text" if "text" in found else (strings[0] if len(strings) == 1 else None)
        if name is None:
            raise InputError(f"{source_of(raw, first)}: no text column found among {', '.join(found)}; "
                             "name it with --text_column_names")
    for split, dataset in raw.items():
        if name not in dataset.column_names:
            raise InputError(f"{source_of(raw, split)} has no column '{name}'; "
                             f"columns found: {', '.join(dataset.column_names)}")
    return name


def check_block_size(block_size: int | None, config, tokenizer) -> int:
    """The block size to use: the one asked for (error if the model's context is shorter), else
    min(1024, context)."""
    context = next((getattr(config, k) for k in ("n_positions", "max_position_embeddings", "n_ctx")
                    if getattr(config, k, None)), None) or tokenizer.model_max_length
    if block_size is None:
        return min(1024, context)
    if block_size > context:
        raise InputError(f"block_size {block_size} is larger than the model's context of {context} tokens")
    return block_size


def tokenize_for_causal_lm(raw: DatasetDict, tokenizer, text_column: str, block_size: int, packing: bool = True,
                           num_proc: int | None = None) -> DatasetDict:
    """Token blocks for causal LM training, labels = input_ids (the model shifts them).

    `packing=True`: texts (each ended by eos) are concatenated and cut into full `block_size` blocks; the
    remainder shorter than a block is dropped. `packing=False`: one example per text, truncated to block_size
    and left unpadded; `DataCollatorForSeq2Seq` then pads labels with -100 so padding never counts.
    Call it inside `training_args.main_process_first()`.
    """
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def encode(batch):
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + eos for t in batch[text_column]]
        if not packing:
            ids = [x[:block_size] for x in ids]
            return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": [list(x) for x in ids]}
        flat = [token for x in ids for token in x]
        usable = len(flat) // block_size * block_size
        blocks = [flat[i: i + block_size] for i in range(0, usable, block_size)]
        return {"input_ids": blocks, "attention_mask": [[1] * block_size for _ in blocks],
                "labels": [list(b) for b in blocks]}

    tokenized = DatasetDict({
        split: dataset.map(encode, batched=True, batch_size=1000, num_proc=num_proc,
                           remove_columns=dataset.column_names, desc=f"Tokenizing {split}")
        for split, dataset in raw.items()
    })
    for split, dataset in tokenized.items():
        if len(dataset) == 0:
            raise InputError(f"{source_of(raw, split)} holds fewer than block_size={block_size} tokens; "
                             "give more text or a smaller --block_size")
    return tokenized


# --- translation -----------------------------------------------------------------------------------------------


def translation_pairs(raw: DatasetDict, source_lang: str, target_lang: str) -> DatasetDict:
    """Bring every split to two string columns, `source` and `target`.

    Accepts the hub form (a `translation` column of `{lang: text}` dicts) and tables with one column per
    language. A missing language is an error naming the split and what was found.
    """
    out = DatasetDict()
    for split, dataset in raw.items():
        where = source_of(raw, split)
        if "translation" in dataset.column_names:
            first = dataset[0]["translation"]
            for lang in (source_lang, target_lang):
                if lang not in first:
                    raise InputError(f"{where}: translation pairs have no '{lang}' text; "
                                     f"languages found: {', '.join(first)}")
            out[split] = dataset.map(
                lambda b: {"source": [t[source_lang] for t in b["translation"]],
                           "target": [t[target_lang] for t in b["translation"]]},
                batched=True, remove_columns=dataset.column_names)
        else:
            for lang in (source_lang, target_lang):
                if lang not in dataset.column_names:
                    raise InputError(f"{where} has no column '{lang}' (one column per language, or a "
                                     f"'translation' column); columns found: {', '.join(dataset.column_names)}")
            out[split] = dataset.select_columns([source_lang, target_lang]).rename_columns(
                {source_lang: "source", target_lang: "target"})
    out.sources = getattr(raw, "sources", {})
    check_texts(out, ["source", "target"])
    return out


def tokenize_for_translation(pairs: DatasetDict, tokenizer, max_source_length: int, max_target_length: int,
                             source_prefix: str = "", num_proc: int | None = None) -> DatasetDict:
    """Tokenize `source` (after `source_prefix`) and `target` (as labels) with truncation and no padding."""

    def encode(batch):
        encoded = tokenizer([source_prefix + s for s in batch["source"]], max_length=max_source_length,
                            truncation=True)
        encoded["labels"] = tokenizer(text_target=batch["target"], max_length=max_target_length,
                                      truncation=True)["input_ids"]
        return encoded

    return DatasetDict({
        split: dataset.map(encode, batched=True, num_proc=num_proc, remove_columns=dataset.column_names,
                           desc=f"Tokenizing {split}")
        for split, dataset in pairs.items()
    })


def seq2seq_collator(tokenizer, training_args, model=None):
    """`DataCollatorForSeq2Seq` padding inputs with pad and labels with -100 (to a multiple of 8 under fp16/bf16)."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100,
                                  pad_to_multiple_of=8 if _mixed_precision(training_args) else None)


def _mixed_precision(training_args) -> bool:
    """fp16/bf16 from the accelerate config (TrainingArguments.mixed_precision) or from --fp16/--bf16."""
    return getattr(training_args, "mixed_precision", "no") in ("fp16", "bf16") or training_args.fp16 or training_args.bf16
