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
    padding_collator,
    seq2seq_collator,
    use_length_batches,
)
from .causal_lm import (
    LM_EXTENSIONS,
    arrange_examples,
    best_fit_decreasing,
    check_block_size,
    check_packed_attention,
    detect_text_column,
    drop_blank_texts,
    packed_collator,
    tokenize_for_causal_lm,
    tokenize_for_sft,
)
from .chat import (
    CHAT_TEMPLATES,
    check_lm_rows,
    detect_lm_format,
    example_texts,
    lm_modes,
    render_prompt,
    use_chat_template,
)
from .classification import (
    ClassificationColumns,
    LabelSpace,
    detect_classification_columns,
    tokenize_for_classification,
)
from .files import (
    TABLE_EXTENSIONS,
    DataSources,
    check_text_dtype,
    check_texts,
    load_data_file,
    load_raw_datasets,
    local_data_files,
)
from .translation import tokenize_for_translation, translation_pairs

__all__ = [
    "CHAT_TEMPLATES",
    "LM_EXTENSIONS",
    "TABLE_EXTENSIONS",
    "ClassificationColumns",
    "DataSources",
    "LabelSpace",
    "LengthBatchSampler",
    "arrange_examples",
    "best_fit_decreasing",
    "check_lm_rows",
    "check_block_size",
    "check_packed_attention",
    "check_text_dtype",
    "check_texts",
    "detect_classification_columns",
    "detect_lm_format",
    "detect_text_column",
    "drop_blank_texts",
    "example_texts",
    "load_data_file",
    "lm_modes",
    "load_raw_datasets",
    "local_data_files",
    "packed_collator",
    "padding_collator",
    "render_prompt",
    "seq2seq_collator",
    "tokenize_for_causal_lm",
    "tokenize_for_classification",
    "tokenize_for_sft",
    "tokenize_for_translation",
    "translation_pairs",
    "use_chat_template",
    "use_length_batches",
    "evaluate_in_dataset_order",
]
