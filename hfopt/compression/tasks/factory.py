"""`load_task`: the task data of a file for a model, checked against it, as the task's class.

Example::

    task = load_task("causal_lm", model, tokenizer, "valid.txt", "outputs/gpt")
    train = load_task("classification", model, tokenizer, "train.csv", role="train_file", lazy=True)
    Trainer(model, args, train_dataset=train.train_dataset(), data_collator=train.data_collator())
"""

from __future__ import annotations

from ...errors import InputError
from .base import TASKS, CompressionTask
from .causal_lm import CausalLMTask
from .classification import ClassificationTask
from .seq2seq import Seq2SeqTask

__all__ = ["TASK_CLASSES", "load_task"]

TASK_CLASSES: dict[str, type[CompressionTask]] = {
    "classification": ClassificationTask,
    "causal_lm": CausalLMTask,
    "seq2seq": Seq2SeqTask,
}
INPUT_LIMIT = 128  # tokens per input, at most the model's positions


def load_task(
    name: str,
    model,
    tokenizer,
    eval_file: str,
    model_dir: str = "",
    text_column_names=None,
    label_column_name=None,
    source_lang=None,
    target_lang=None,
    max_eval_samples: int | None = None,
    max_new_tokens: int = 16,
    role: str = "eval_file",
    *,
    lazy: bool = False,
    data_format: str = "auto",
    chat_template: str | None = None,
) -> CompressionTask:
    """Read `eval_file` (any file of the task's format: evaluation, calibration or training rows) for task `name`
    and check it fits the model; a file that does not fit is one InputError naming the file's `role` (the flag
    it came from), the task, the model (`model_dir`, else the model's own name) and what is wrong. Returns a
    `ClassificationTask`, `CausalLMTask` or `Seq2SeqTask`.

    `max_eval_samples` keeps the first rows only. The evaluation batches are tokenized at load, which also
    checks that a causal LM's text fills a block; `lazy=True` leaves them to first use, for a file read for
    `train_dataset()` only. Causal LM files are text, prompt/completion or `messages` rows (`data_format`
    "auto" finds which, as finetune_gpt.py does; `chat_template` names a template for a tokenizer without one).
    """
    from ...args import DataArguments
    from ...data import LM_EXTENSIONS, TABLE_EXTENSIONS, check_texts, detect_classification_columns, load_raw_datasets
    from ...models import model_max_positions

    if name not in TASK_CLASSES:
        raise InputError(f"task must be one of {', '.join(TASKS)}, got '{name}'")
    data_args = DataArguments(
        validation_file=eval_file,
        text_column_names=text_column_names,
        label_column_name=label_column_name,
        max_eval_samples=max_eval_samples,
    )
    positions = model_max_positions(model.config)
    limit = min(INPUT_LIMIT, positions) if positions else INPUT_LIMIT  # longer inputs would index past positions
    model_name = model_dir or getattr(model.config, "_name_or_path", "") or type(model).__name__
    context = f"{role} does not fit the {name} model {model_name}"
    options = dict(max_new_tokens=max_new_tokens, max_input_length=limit, context=context)
    try:
        raw, sources = load_raw_datasets(
            data_args, extensions=LM_EXTENSIONS if name == "causal_lm" else TABLE_EXTENSIONS
        )
        if name == "classification":
            columns = detect_classification_columns(raw, data_args, sources)
            check_texts(raw, columns.text, sources)
            task = ClassificationTask.from_rows(raw["validation"], columns, model, tokenizer, **options)
        elif name == "causal_lm":
            task = CausalLMTask.from_raw(
                raw, sources, model, tokenizer, text_column_names, data_format, chat_template, **options
            )
        else:
            task = Seq2SeqTask.from_raw(raw, sources, tokenizer, source_lang, target_lang, **options)
        if not lazy:
            task.metric_batches  # noqa: B018 - tokenized (and checked) now
    except InputError as err:
        if str(err).startswith(context):  # raised by the task itself, already naming the file
            raise
        raise InputError(f"{context}: {err}") from None
    return task
