"""Translation data: parallel text in the hub's `translation` form or one column per language, tokenization of
sources and targets.

Example::

    raw, sources = load_raw_datasets(data_args)
    pairs = translation_pairs(raw, "en", "de", sources)
    tokenized = tokenize_for_translation(pairs, tokenizer, max_source_length=128, max_target_length=128)
"""

from __future__ import annotations

from datasets import DatasetDict

from ..errors import InputError
from .files import DataSources, check_texts, tokenize_splits

__all__ = ["tokenize_for_translation", "translation_pairs"]


def translation_pairs(raw: DatasetDict, source_lang: str, target_lang: str, sources: DataSources) -> DatasetDict:
    """Bring every split to two string columns, `source` and `target`.

    Accepts the hub form (a `translation` column of `{lang: text}` dicts) and tables with one column per
    language. A missing language is an error naming the split and what was found.
    """
    out = DatasetDict()
    for split, dataset in raw.items():
        where = sources.of(split)
        if "translation" in dataset.column_names:
            first = dataset[0]["translation"]
            if not isinstance(first, dict):
                raise InputError(f"{where}: column 'translation' must hold {{language: text}} objects")
            for lang in (source_lang, target_lang):
                if lang not in first:
                    raise InputError(
                        f"{where}: translation pairs have no '{lang}' text; languages found: {', '.join(first)}"
                    )
            out[split] = dataset.map(
                lambda b: {
                    "source": [t[source_lang] for t in b["translation"]],
                    "target": [t[target_lang] for t in b["translation"]],
                },
                batched=True,
                remove_columns=dataset.column_names,
            )
        else:
            for lang in (source_lang, target_lang):
                if lang not in dataset.column_names:
                    raise InputError(
                        f"{where} has no column '{lang}' (one column per language, or a 'translation' column); "
                        f"columns found: {', '.join(dataset.column_names)}"
                    )
            out[split] = dataset.select_columns([source_lang, target_lang]).rename_columns(
                {source_lang: "source", target_lang: "target"}
            )
    check_texts(out, ["source", "target"], sources)
    return out


def tokenize_for_translation(
    pairs: DatasetDict,
    tokenizer,
    max_source_length: int,
    max_target_length: int,
    source_prefix: str = "",
    num_proc: int | None = None,
) -> DatasetDict:
    """Tokenize `source` (after `source_prefix`) and `target` (as labels) with truncation and no padding."""

    def encode(batch):
        encoded = tokenizer([source_prefix + s for s in batch["source"]], max_length=max_source_length, truncation=True)
        encoded["labels"] = tokenizer(text_target=batch["target"], max_length=max_target_length, truncation=True)[
            "input_ids"
        ]
        return encoded

    return tokenize_splits(pairs, encode, num_proc)
