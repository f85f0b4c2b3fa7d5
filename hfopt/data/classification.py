"""Sequence-classification data: finding the text and label columns, the label space (checked on every split),
and tokenization.

Example::

    raw, sources = load_raw_datasets(data_args)
    columns = detect_classification_columns(raw, data_args, sources)
    labels = LabelSpace.from_datasets(raw, columns.label, sources)
    tokenized = tokenize_for_classification(raw, tokenizer, columns, labels)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from datasets import ClassLabel, DatasetDict

from ..errors import InputError
from .files import DataSources, tokenize_splits

if TYPE_CHECKING:
    from ..args import DataArguments

__all__ = [
    "ClassificationColumns",
    "LabelSpace",
    "detect_classification_columns",
    "tokenize_for_classification",
]

TEXT_COLUMN_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question", "sentence"),
    ("sentence",),
    ("text",),
)
LABEL_COLUMN_CANDIDATES = ("label", "labels")


@dataclass
class ClassificationColumns:
    """The text column(s) and the label column of a classification dataset.

    Args:
        text: one text column, or two for sentence pairs.
        label: the label column.
    """

    text: list[str]
    label: str


def detect_classification_columns(
    raw: DatasetDict, data_args: DataArguments, sources: DataSources
) -> ClassificationColumns:
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
                f"{sources.of(train_split)}: no text column found among {', '.join(found)}; "
                "name it with --text_column_names"
            )
    if len(text) > 2:
        raise InputError(f"text_column_names takes one or two columns, got {len(text)}: {', '.join(text)}")

    label = data_args.label_column_name or next((c for c in LABEL_COLUMN_CANDIDATES if c in found), None)
    if label is None:
        raise InputError(
            f"{sources.of(train_split)}: no label column found among {', '.join(found)}; "
            "name it with --label_column_name"
        )
    for split, dataset in raw.items():
        needed = text + ([label] if split != "test" else [])
        for column in needed:
            if column not in dataset.column_names:
                raise InputError(
                    f"{sources.of(split)} has no column '{column}'; columns found: {', '.join(dataset.column_names)}"
                )
    return ClassificationColumns(text=text, label=label)


@dataclass
class LabelSpace:
    """The classes of a classification task: `names[i]` is the label of class id i.

    Args:
        names: the class names in id order.
        string_labels: whether the data holds the names (True) or the ids (False).

    Example::

        labels = LabelSpace.from_datasets(raw, "label", sources)
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
    def from_datasets(
        cls, raw: DatasetDict, label_column: str, sources: DataSources, num_labels: int | None = None
    ) -> LabelSpace:
        """Read the label space from the data (ClassLabel names, sorted strings, or ids 0..max) and check it.

        Training data must hold at least two classes. Labels of the validation split must occur in train (string
        labels) or lie in [0, num_labels) (ids). A test split whose labels are all missing or -1 counts as
        unlabelled.
        """
        train_split = "train" if "train" in raw else next(iter(raw))
        feature = raw[train_split].features[label_column]
        values = list(raw[train_split][label_column])
        if any(v is None for v in values):
            first = next(i for i, v in enumerate(values) if v is None)
            raise InputError(f"{sources.of(train_split)}: missing '{label_column}' at row index {first}")
        if isinstance(feature, ClassLabel):
            space = cls(names=list(feature.names), string_labels=False)
        elif all(isinstance(v, str) for v in values):
            space = cls(names=sorted(set(values)), string_labels=True)
        elif all(isinstance(v, int) or (isinstance(v, float) and v.is_integer()) for v in values):
            top = int(max(values))
            space = cls(names=[str(i) for i in range(max(top + 1, num_labels or 0))], string_labels=False)
        else:
            raise InputError(
                f"{sources.of(train_split)}: column '{label_column}' holds {feature}; expected class ids "
                "(0, 1, ...) or class names"
            )
        present = Counter(str(v) if space.string_labels else int(v) for v in values)
        if len(present) < 2:
            (only,) = present
            raise InputError(
                f"{sources.of(train_split)}: every training row has label {only!r} in column '{label_column}'; "
                "classification needs at least two classes (if the file is sorted by label, --max_train_samples "
                "keeps only its first rows: shuffle the file)"
            )
        if num_labels is not None and num_labels < space.num_labels and not space.string_labels:
            space = cls(names=space.names[:num_labels], string_labels=False)
        if num_labels is not None and space.num_labels != num_labels:
            raise InputError(
                f"num_labels is {num_labels} but {sources.of(train_split)} has {space.num_labels} classes "
                f"({', '.join(space.names[:10])})"
            )
        for split, dataset in raw.items():
            if label_column in dataset.column_names:
                space.check(dataset[label_column], sources.of(split), label_column, unlabelled_ok=split == "test")
        return space

    def check(self, values: Sequence, source: str, column: str, unlabelled_ok: bool = False) -> None:
        """Raise InputError for the first label outside this space (naming the row and the value)."""
        if unlabelled_ok and all(v is None or v == -1 for v in values):
            return
        for i, value in enumerate(values):
            ok = (
                (str(value) in self.label2id)
                if self.string_labels
                else (
                    isinstance(value, (int, float)) and float(value).is_integer() and 0 <= int(value) < self.num_labels
                )
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

    return tokenize_splits(raw, encode, num_proc)
