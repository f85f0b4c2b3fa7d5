"""What a compression report measures, by task: the evaluation data (checked against the model), the task
metric, labelled batches for importance scores, latency on that task's inputs, and the training data of
recovery fine-tuning and distillation. One class per task, built by `load_task`.

| task | class | detected from | metric | latency |
|---|---|---|---|---|
| classification | `ClassificationTask` | `*ForSequenceClassification` | accuracy, F1 | a forward pass (b1, b16) |
| causal_lm | `CausalLMTask` | `*LMHeadModel`, `*ForCausalLM` | perplexity, token accuracy | generation, per token |
| seq2seq | `Seq2SeqTask` | `*ForConditionalGeneration`, `*MTModel` | BLEU, chrF (greedy) | generation, per token |

Example::

    task = load_task("causal_lm", model, tokenizer, "valid.txt", "outputs/gpt")
    task.evaluate(model)          # {"perplexity": 41.2, "accuracy": 0.31}
    Trainer(model, args, train_dataset=task.train_dataset(), data_collator=task.data_collator())
"""

from .base import TASKS, CompressionTask, detect_task, task_auto_class
from .causal_lm import CausalLMTask
from .classification import ClassificationTask
from .factory import TASK_CLASSES, load_task
from .seq2seq import Seq2SeqTask

__all__ = [
    "TASKS",
    "TASK_CLASSES",
    "CausalLMTask",
    "ClassificationTask",
    "CompressionTask",
    "Seq2SeqTask",
    "detect_task",
    "load_task",
    "task_auto_class",
]
