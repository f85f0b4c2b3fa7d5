import numpy as np
from transformers import EvalPrediction

from hfopt.metrics import classification_metrics


def test_classification_metrics_match_hand_counts():
    # predictions: 1, 0, 1, 1 ; labels: 1, 0, 0, 1  -> TP=2, FP=1, FN=0, TN=1
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.0, 1.0]])
    labels = np.array([1, 0, 0, 1])
    m = classification_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    assert m["accuracy"] == 0.75
    assert abs(m["f1"] - 2 * 2 / (2 * 2 + 1 + 0)) < 1e-9
    expected_mcc = (2 * 1 - 1 * 0) / np.sqrt((2 + 1) * (2 + 0) * (1 + 1) * (1 + 0))
    assert abs(m["mcc"] - expected_mcc) < 1e-9


def test_multiclass_uses_macro_f1_and_ignores_minus_100():
    logits = np.eye(3)[[0, 1, 2, 2, 0]]
    labels = np.array([0, 1, 2, 1, -100])
    m = classification_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    assert m["accuracy"] == 0.75
    # per class F1: c0 = 1, c1 = 2/3, c2 = 2/3
    assert abs(m["f1"] - (1 + 2 / 3 + 2 / 3) / 3) < 1e-9
