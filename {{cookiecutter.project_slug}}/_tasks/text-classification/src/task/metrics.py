"""Classification metrics with numpy: the one place they are computed.

Training's `compute_metrics` and `uv run evaluate` both call these, so the accuracy and
macro F1 in metrics.json and in report.md are the same formula. Macro F1 averages over
the labels that occur in the truth or the predictions (as scikit-learn does by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray


def accuracy(truth: ArrayLike, predicted: ArrayLike) -> float:
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    return float(np.mean(truth == predicted)) if truth.size else 0.0


def cross_entropy(logits: ArrayLike, truth: ArrayLike) -> float:
    """The mean negative log-probability of the true labels: the classifier's loss, example by example."""
    scores, labels = np.asarray(logits, dtype=np.float64), np.asarray(truth, dtype=np.int64)
    shifted = scores - scores.max(axis=-1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-log_probabilities[np.arange(len(labels)), labels].mean()) if labels.size else 0.0


def confusion_matrix(truth: ArrayLike, predicted: ArrayLike, num_labels: int | None = None) -> NDArray[np.int64]:
    """counts[i, j]: examples of true label i predicted as j."""
    truth, predicted = np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if num_labels is None:
        num_labels = int(max(truth.max(initial=0), predicted.max(initial=0))) + 1
    counts = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(counts, (truth, predicted), 1)
    return counts


def per_class(counts: NDArray[np.int64]) -> dict[str, NDArray[np.float64]]:
    """Precision, recall, F1 and support per label from a confusion matrix (0 where undefined)."""
    true_positive = np.diag(counts).astype(np.float64)
    predicted_total = counts.sum(axis=0).astype(np.float64)
    support = counts.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_total > 0, true_positive / predicted_total, 0.0)
        recall = np.where(support > 0, true_positive / support, 0.0)
        denominator = predicted_total + support
        f1 = np.where(denominator > 0, 2 * true_positive / denominator, 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def _macro_f1(counts: NDArray[np.int64]) -> float:
    occurring = (counts.sum(axis=0) + counts.sum(axis=1)) > 0
    f1 = per_class(counts)["f1"]
    return float(f1[occurring].mean()) if occurring.any() else 0.0


def macro_f1(truth: ArrayLike, predicted: ArrayLike) -> float:
    return _macro_f1(confusion_matrix(truth, predicted))


def classification_report(truth: ArrayLike, predicted: ArrayLike, labels: Sequence[str]) -> dict[str, Any]:
    """Everything report.md shows, JSON-ready: accuracy, macro F1, per-label scores, the matrix."""
    counts = confusion_matrix(truth, predicted, len(labels))
    scores = per_class(counts)
    return {
        "count": int(counts.sum()),
        "accuracy": accuracy(truth, predicted),
        "macro_f1": _macro_f1(counts),
        "labels": list(labels),
        "per_class": {
            label: {
                "precision": float(scores["precision"][index]),
                "recall": float(scores["recall"][index]),
                "f1": float(scores["f1"][index]),
                "support": int(scores["support"][index]),
            }
            for index, label in enumerate(labels)
        },
        "confusion_matrix": counts.tolist(),
    }
