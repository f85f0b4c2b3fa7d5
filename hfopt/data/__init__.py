"""Data for the recipes: loading and checking files (`files`), and one module per task (`classification`,
`causal_lm`, `translation`), plus batching.

Example::

    from hfopt.data import load_raw_datasets, detect_classification_columns, LabelSpace
    raw, sources = load_raw_datasets(data_args)
    columns = detect_classification_columns(raw, data_args, sources)
"""

from .batching import (
    LengthBatchSampler,
    evaluate_in_dataset_order,
    example_lengths,
    padding_collator,
    seq2seq_collator,
    use_length_batches,
)
from .causal_lm import LM_EXTENSIONS, check_block_size, detect_text_column, drop_blank_texts, tokenize_for_causal_lm
from .classification import (
    ClassificationColumns,
    LabelSpace,
    detect_classification_columns,
    tokenize_for_classification,
)
from .files import (
    FILE_FORMATS,
    TABLE_EXTENSIONS,
    DataSources,
    check_text_dtype,
    check_texts,
    check_utf8,
    load_data_file,
    load_raw_datasets,
    local_data_files,
)
from .translation import tokenize_for_translation, translation_pairs

__all__ = [
    "FILE_FORMATS",
    "LM_EXTENSIONS",
    "TABLE_EXTENSIONS",
    "ClassificationColumns",
    "DataSources",
    "LabelSpace",
    "LengthBatchSampler",
    "check_block_size",
    "check_text_dtype",
    "check_texts",
    "check_utf8",
    "detect_classification_columns",
    "detect_text_column",
    "drop_blank_texts",
    "example_lengths",
    "load_data_file",
    "load_raw_datasets",
    "local_data_files",
    "padding_collator",
    "seq2seq_collator",
    "tokenize_for_causal_lm",
    "tokenize_for_classification",
    "tokenize_for_translation",
    "translation_pairs",
    "use_length_batches",
    "evaluate_in_dataset_order",
]
