"""Task metrics computed offline (numpy and scikit-learn), in the shape `Trainer(compute_metrics=...)` expects."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def classification_metrics(eval_pred) -> dict[str, float]:
    """Accuracy, F1 (binary: of class 1; multi-class: macro) and Matthews correlation from logits and labels.

    Example::

        Trainer(..., compute_metrics=classification_metrics)
    """
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    predictions = np.argmax(logits, axis=-1)
    labelled = labels != -100
    predictions, labels = predictions[labelled], labels[labelled]
    num_classes = logits.shape[-1]
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1": float(f1_score(labels, predictions, average="binary" if num_classes == 2 else "macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(labels, predictions)) if len(np.unique(labels)) > 1 else 0.0,
    }


def add_perplexity(metrics: dict[str, float], prefix: str = "eval") -> dict[str, float]:
    """Add `<prefix>_perplexity` = exp(`<prefix>_loss`) to an evaluation's metrics (inf if it overflows)."""
    loss = metrics.get(f"{prefix}_loss")
    if loss is not None:
        metrics[f"{prefix}_perplexity"] = float(math.exp(loss)) if loss < 700 else float("inf")
    return metrics


def argmax_logits(logits, labels):
    """`preprocess_logits_for_metrics` that keeps only the predicted token ids, never whole-vocabulary logits.

    Example::

        Trainer(..., preprocess_logits_for_metrics=argmax_logits, compute_metrics=next_token_accuracy)
    """
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def next_token_accuracy(eval_pred) -> dict[str, float]:
    """Share of positions where the predicted next token equals the label (labels shifted by one; -100 skipped)."""
    predictions, labels = eval_pred.predictions, eval_pred.label_ids
    predictions, labels = predictions[:, :-1], labels[:, 1:]
    mask = labels != -100
    return {"accuracy": float((predictions[mask] == labels[mask]).mean()) if mask.any() else 0.0}


def translation_metrics(tokenizer):
    """A `compute_metrics` for generated translations: corpus BLEU and chrF (sacrebleu) and mean generation length.

    -100 in predictions or labels is replaced by the pad id before decoding.

    Example::

        Seq2SeqTrainer(..., compute_metrics=translation_metrics(tokenizer))
    """
    import sacrebleu

    def compute(eval_pred) -> dict[str, float]:
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        predictions = np.where(predictions != -100, predictions, tokenizer.pad_token_id)
        labels = np.where(labels != -100, labels, tokenizer.pad_token_id)
        hypotheses = [t.strip() for t in tokenizer.batch_decode(predictions, skip_special_tokens=True)]
        references = [t.strip() for t in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        return {
            "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score,
            "gen_len": float(np.mean(np.count_nonzero(predictions != tokenizer.pad_token_id, axis=1))),
        }

    return compute
