"""Task metrics in the shape `Trainer(compute_metrics=...)` expects: built-in ones computed offline (numpy,
scikit-learn, sacrebleu) and, on top, any metric of the `evaluate` library.

Example::

    Trainer(..., compute_metrics=classification_metrics)
    Trainer(..., compute_metrics=EvaluateMetric("my_metric.py").combined_with(classification_metrics, "classification"))
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

__all__ = [
    "BUILTIN_METRICS",
    "EvaluateMetric",
    "add_perplexity",
    "argmax_logits",
    "bleu_of_rows",
    "classification_metrics",
    "paired_bleu_change",
    "paired_drop",
    "paired_perplexity_change",
    "task_metrics",
]

# The metrics each task's evaluation reports (besides `loss`), by the names Trainer logs them under (eval_<name>).
BUILTIN_METRICS = {
    "classification": ("accuracy", "f1", "mcc"),
    "causal_lm": ("accuracy",),
    "translation": ("bleu", "chrf", "gen_len"),
}


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


def paired_drop(reference_right, right) -> tuple[float, float]:
    """The accuracy a model lost against a reference on the same rows (each a 0/1 "was right"), and the standard
    error of that drop, paired row by row: only the rows where exactly one of the two is right move it, so two
    close models are told apart on fewer rows than two independent accuracies would need."""
    diff = np.asarray(reference_right, dtype=float) - np.asarray(right, dtype=float)
    if diff.ndim != 1 or len(diff) < 2:
        raise ValueError(f"paired_drop needs two rows or more of each model, got {diff.shape}")
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff)))


def paired_perplexity_change(reference_rows, rows) -> tuple[float, float]:
    """A model's perplexity relative to a reference's on the same rows, minus one (0.03: 3% higher), and the
    standard error of that change, paired row by row. Each row is (summed negative log-likelihood, scored
    tokens); the change is exp(D) - 1 for D the difference of the two mean token losses, and its error
    exp(D) times D's (the ratio-of-sums error over rows, so long and short rows weigh as their tokens do)."""
    reference, model = np.asarray(reference_rows, dtype=float), np.asarray(rows, dtype=float)
    if reference.ndim != 2 or reference.shape[1:] != (2,) or reference.shape != model.shape or len(reference) < 2:
        raise ValueError(f"paired_perplexity_change needs (nll, tokens) for two rows or more of each model, got "
                         f"{reference.shape} and {model.shape}")  # fmt: skip
    tokens = reference[:, 1]
    if not np.array_equal(tokens, model[:, 1]) or tokens.sum() <= 0:
        raise ValueError("paired_perplexity_change: the two models were scored on different tokens")
    diff = model[:, 0] - reference[:, 0]
    mean = diff.sum() / tokens.sum()
    residual = diff - mean * tokens
    error = math.sqrt(len(diff) / (len(diff) - 1) * float((residual**2).sum())) / tokens.sum()
    factor = math.exp(min(mean, 700))
    return factor - 1, factor * error


def bleu_of_rows(rows, bleu=None) -> float:
    """Corpus BLEU (sacrebleu's `BLEU()`, default settings: `corpus_bleu`'s) from per-row BLEU statistics
    (`Seq2SeqTask.bleu_rows`). Statistics and score from them are what sacrebleu's own paired bootstrap
    (`sacrebleu.significance`) uses: `_extract_corpus_statistics`, `_compute_score_from_stats`."""
    import sacrebleu

    bleu = bleu or sacrebleu.BLEU()
    return float(bleu._compute_score_from_stats(np.asarray(rows, dtype=float).sum(0).tolist()).score)


def paired_bleu_change(reference_rows, rows, samples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """BLEU points a model lost against a reference on the same rows, and the standard error of that loss by
    paired bootstrap resampling (Koehn 2004; sacrebleu's BLEU of each resample): both models' rows are drawn
    with the same indices, so the error is the one of the difference, not of either score. Each row holds
    sacrebleu's BLEU statistics of one translation (`Seq2SeqTask.bleu_rows`)."""
    reference, model = np.asarray(reference_rows, dtype=float), np.asarray(rows, dtype=float)
    if reference.ndim != 2 or reference.shape != model.shape or len(reference) < 2:
        raise ValueError(f"paired_bleu_change needs BLEU statistics of two rows or more of each model, got "
                         f"{reference.shape} and {model.shape}")  # fmt: skip
    import sacrebleu

    bleu = sacrebleu.BLEU()
    indices = np.random.default_rng(seed).integers(0, len(reference), size=(samples, len(reference)))
    losses = [bleu_of_rows(reference[i], bleu) - bleu_of_rows(model[i], bleu) for i in indices]
    return bleu_of_rows(reference) - bleu_of_rows(model), float(np.std(losses, ddof=1))


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


# --- metrics from the `evaluate` library -------------------------------------------------------------------------


class EvaluateMetric:
    """A metric of the `evaluate` library, by name (the hub, or evaluate's local cache) or by the path of a metric
    script, computed next to a recipe's built-in metrics. Only numeric results are kept (nested ones as
    `key_subkey`); a key that clashes with a built-in metric gets the metric's name as prefix.

    Args:
        name_or_path: e.g. "accuracy", "sacrebleu", or "path/to/my_metric.py".

    Example::

        metric = EvaluateMetric("path/to/my_metric.py")
        Trainer(..., compute_metrics=metric.combined_with(classification_metrics, "classification"))
    """

    def __init__(self, name_or_path: str):
        import evaluate

        from .errors import InputError

        try:
            self.metric = evaluate.load(name_or_path)
        except Exception as err:  # evaluate raises many types: missing script, hub unreachable, bad module
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(
                f"metric {name_or_path} could not be loaded ({first[:200]}); give the path of a metric "
                "script or a name evaluate can load"
            ) from None
        self.name = getattr(self.metric, "name", None) or name_or_path.rsplit("/", 1)[-1].removesuffix(".py")

    def _wants_nested_references(self) -> bool:
        features = self.metric.features
        features = features[0] if isinstance(features, list) else features
        reference = features.get("references") if features is not None else None
        return reference is not None and not hasattr(reference, "dtype")  # Sequence(Value(...)): one list per row

    def compute(self, predictions, references, builtin: set[str] = frozenset()) -> dict[str, float]:
        """The metric's numeric results for these predictions and references."""
        if self._wants_nested_references() and references and not isinstance(references[0], (list, tuple)):
            references = [[r] for r in references]
        raw = self.metric.compute(predictions=predictions, references=references) or {}
        out = {}
        for key, value in raw.items():
            items = value.items() if isinstance(value, dict) else [("", value)]
            for sub, v in items:
                name = f"{key}_{sub}" if sub else key
                if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                    out[f"{self.name}_{name}" if name in builtin else name] = float(v)
        return out

    def combined_with(self, compute_metrics, task: str, tokenizer=None):
        """A `compute_metrics` returning the built-in metrics of `task` ("classification", "causal_lm",
        "translation") and this metric's, on the same predictions."""

        def compute(eval_pred):
            results = compute_metrics(eval_pred)
            predictions, references = _metric_inputs(eval_pred, task, tokenizer)
            results.update(self.compute(predictions, references, builtin=set(results)))
            return results

        return compute

    def result_keys(self, task: str, builtin: set[str]) -> list[str]:
        """The keys this metric adds, found by computing it on two made-up examples (and failing early if it
        cannot compute on this task's inputs)."""
        from .errors import InputError

        sample = {
            "classification": ([0, 1], [0, 1]),
            "causal_lm": ([3, 4], [3, 4]),
            "translation": (["a b c d", "e f g h"], ["a b c d", "e f g h"]),
        }[task]
        try:
            return sorted(self.compute(*sample, builtin=builtin))
        except Exception as err:
            raise InputError(
                f"metric {self.name} cannot score {task} outputs: {str(err).splitlines()[0][:200]}"
            ) from None


def _metric_inputs(eval_pred, task: str, tokenizer):
    predictions, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    if task == "classification":
        keep = labels != -100
        return np.argmax(predictions, axis=-1)[keep].tolist(), labels[keep].tolist()
    if task == "causal_lm":
        predictions, labels = predictions[:, :-1], labels[:, 1:]
        keep = labels != -100
        return predictions[keep].tolist(), labels[keep].tolist()
    pad = tokenizer.pad_token_id
    predictions = np.where(predictions != -100, predictions, pad)
    labels = np.where(labels != -100, labels, pad)
    hypotheses = [t.strip() for t in tokenizer.batch_decode(predictions, skip_special_tokens=True)]
    references = [t.strip() for t in tokenizer.batch_decode(labels, skip_special_tokens=True)]
    return hypotheses, references


def task_metrics(task: str, metric: str | None = None, tokenizer=None):
    """The `compute_metrics` of a task ("classification", "causal_lm", "translation"), with the `evaluate`
    metric `metric` on top if given, and the names of everything it reports (for checking
    metric_for_best_model before training).

    Example::

        compute_metrics, names = task_metrics("classification", run_args.metric)
    """
    builtin = {"classification": classification_metrics, "causal_lm": next_token_accuracy}.get(task)
    if task == "translation":
        builtin = translation_metrics(tokenizer)
    names = list(BUILTIN_METRICS[task])
    if metric is None:
        return builtin, names
    extra = EvaluateMetric(metric)
    names += extra.result_keys(task, set(names))
    return extra.combined_with(builtin, task, tokenizer), names
