"""hfopt.metrics: the built-in metrics by hand counts, and evaluate metrics on top of them."""

import numpy as np
import pytest
from transformers import EvalPrediction

from hfopt.errors import InputError
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


METRIC_SCRIPT = """
import datasets
import evaluate


class ErrorRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="share of wrong predictions", citation="", inputs_description="",
                                   features=datasets.Features({"predictions": datasets.Value("int64"),
                                                               "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        wrong = sum(p != r for p, r in zip(predictions, references))
        return {"error_rate": wrong / len(references), "accuracy": 1 - wrong / len(references)}
"""


def test_an_evaluate_metric_script_is_computed_next_to_the_built_in_metrics(tmp_path, monkeypatch):
    from hfopt.metrics import EvaluateMetric, task_metrics

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script = tmp_path / "error_rate.py"
    script.write_text(METRIC_SCRIPT)
    compute, names = task_metrics("classification", str(script))
    assert names == ["accuracy", "f1", "mcc", "error_rate", "error_rate_accuracy"]
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.0, 1.0]])
    m = compute(EvalPrediction(predictions=logits, label_ids=np.array([1, 0, 0, 1])))
    assert m["accuracy"] == 0.75 and m["error_rate"] == 0.25 and m["error_rate_accuracy"] == 0.75
    with pytest.raises(InputError, match=r"metric .*no_such_metric\.py could not be loaded"):
        EvaluateMetric(str(tmp_path / "no_such_metric.py"))
