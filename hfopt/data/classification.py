"""Sequence-classification data: finding the text and label columns, the label space (checked on every split),
and tokenization.

Example::

    raw, sources = load_raw_datasets(data_args)
    columns = detect_classification_columns(raw, data_args, sources)
    labels = LabelSpace.from_datasets(raw, columns.label, sources)
    tokenized = tokenize_for_classification(raw, tokenizer, columns, labels)
"""

from __future__ import annotations

import math
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
        source = sources.of(train_split)
        feature = raw[train_split].features[label_column]
        values = list(raw[train_split][label_column])
        first = next((i for i, v in enumerate(values) if _is_missing(v)), None)
        if first is not None:
            raise InputError(f"{source}: missing '{label_column}' at row index {first}")
        if isinstance(feature, ClassLabel):
            space = cls(names=list(feature.names), string_labels=False)
        elif all(isinstance(v, bool) for v in values):  # true/false: two named classes, False first
            space = cls(names=sorted({str(v) for v in values}), string_labels=True)
        elif all(isinstance(v, str) for v in values):
            space = cls(names=_string_label_names(values, source, label_column), string_labels=True)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            for i, v in enumerate(values):
                if not _is_class_id(v):
                    raise InputError(_not_an_id(v, i, source, label_column))
            top = int(max(values))
            distinct = len(set(map(int, values)))
            if num_labels is None and top + 1 > 2 * distinct + 10:
                raise InputError(
                    f"{source}: label {top} at row index {values.index(top)} of column '{label_column}' would "
                    f"make {top + 1} classes of which {distinct} occur: class ids run 0, 1, 2, ... (is it the "
                    "right column? give --num_labels to keep ids this large)"
                )
            space = cls(names=[str(i) for i in range(max(top + 1, num_labels or 0))], string_labels=False)
        else:
            kinds = sorted({type(v).__name__ for v in values})
            raise InputError(
                f"{source}: column '{label_column}' holds {feature} ({', '.join(kinds)}); expected class ids "
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
            if self.string_labels:
                ok = not isinstance(value, float) and str(value) in self.label2id
            else:
                if isinstance(value, (int, float, str)) and not isinstance(value, bool) and not _is_class_id(value):
                    raise InputError(_not_an_id(value, i, source, column))
                ok = isinstance(value, (int, float)) and 0 <= int(value) < self.num_labels
            if not ok:
                expected = ", ".join(self.names[:10]) if self.string_labels else f"0..{self.num_labels - 1}"
                raise InputError(
                    f"{source}: label {value!r} at row index {i} of column '{column}' is outside the "
                    f"{self.num_labels} classes ({expected})"
                )


def _is_missing(value) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _is_class_id(value) -> bool:
    """A whole number (1 or 1.0), never a fraction, infinity or text."""
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value == int(value)
    )


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _not_an_id(value, row: int, source: str, column: str) -> str:
    return (
        f"{source}: label {value!r} at row index {row} of column '{column}' is not a class id: labels are whole "
        "class ids (0, 1, 2, ...) or class names, and a fraction is never rounded to a class (is it a score, or "
        "the wrong column?)"
    )


def _string_label_names(values: Sequence[str], source: str, column: str) -> list[str]:
    """The class names of a column of text labels, in id order (numbers in numeric order, else sorted).

    Refused: names with spaces around them (' pos' and 'pos' would be two classes), numbers mixed with names
    ('1' and 'pos'), fractions ('0.5') and one number written two ways ('1' and '1.0')."""
    numbers: dict[int, tuple[str, int]] = {}
    first_name = first_number = None
    for i, value in enumerate(values):
        if value != value.strip():
            raise InputError(
                f"{source}: label {value!r} at row index {i} of column '{column}' has spaces around it; "
                "remove them (they would make it a class of its own)"
            )
        number = _number(value)
        if number is None:
            first_name = first_name or (value, i)
            continue
        first_number = first_number or (value, i)
        if not _is_class_id(number):
            raise InputError(_not_an_id(value, i, source, column))
        seen = numbers.setdefault(int(number), (value, i))
        if seen[0] != value:
            raise InputError(
                f"{source}: labels {seen[0]!r} (row index {seen[1]}) and {value!r} (row index {i}) of column "
                f"'{column}' are the same class id written two ways; write each class one way"
            )
    if first_name and first_number:
        raise InputError(
            f"{source}: column '{column}' mixes numbers and names ({first_number[0]!r} at row index "
            f"{first_number[1]}, {first_name[0]!r} at row index {first_name[1]}); labels are either class ids "
            "(0, 1, ...) or class names, one kind per column"
        )
    if first_number:
        return [value for _, (value, _) in sorted(numbers.items())]
    return sorted(set(values))


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
