"""Task metrics computed offline (numpy and scikit-learn), in the shape `Trainer(compute_metrics=...)` expects."""

from __future__ import annotations

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
