"""Classification metrics of the paper's tables: per-class precision, recall and F1, accuracy, weighted F1.

numpy only.  Labels are integer class indices into ``classes`` (the canonical order of :mod:`edge.labels`
unless a caller says otherwise).  Every ratio whose denominator is zero is defined as 0, so no metric is ever
NaN: a class nobody predicted has precision 0, a class with no support has recall 0, and either way F1 0.

The paper's "overall" F1 (Tables 2 and 4) is the support-weighted mean of the per-class F1 scores
(``weighted_f1``); ``macro_f1`` is the unweighted mean over the classes that occur in ``y_true`` or ``y_pred``
(a class that occurs in neither is left out of the mean rather than counted as 0, as scikit-learn does when it
is not given an explicit label list).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edge.errors import DataError, InputError

__all__ = ["confusion_matrix", "classification_metrics", "validate_labels"]


def validate_labels(values: Any, num_classes: int, *, name: str = "labels") -> np.ndarray:
    """Return ``values`` as a 1-D int64 array of class indices in ``0..num_classes-1``.

    Raises :class:`DataError` naming ``name`` and what was expected when the values are empty, not 1-D,
    not integers, or out of range.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D sequence of class indices, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{name}: expected at least one class index, got an empty sequence")
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(
            f"{name}: expected integer class indices 0..{num_classes - 1}, got values of type {arr.dtype}"
        )
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name}: expected class indices in 0..{num_classes - 1}, got {int(arr[first])} at position {first}"
            f" ({int(bad.sum())} value(s) out of range)"
        )
    return arr.astype(np.int64, copy=False)


def _validate_pair(y_true: Any, y_pred: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
    t = validate_labels(y_true, int(num_classes), name="y_true")
    p = validate_labels(y_pred, int(num_classes), name="y_pred")
    if t.shape != p.shape:
        raise DataError(
            f"y_true and y_pred must have the same length (one prediction per sample), got {t.size} and {p.size}"
        )
    return t, p


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Counts as a ``(num_classes, num_classes)`` int64 array: row = true class, column = predicted class."""
    t, p = _validate_pair(y_true, y_pred, num_classes)
    k = int(num_classes)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` with 0 where ``den`` is 0 (never NaN, never a warning)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def classification_metrics(y_true: Any, y_pred: Any, classes: Sequence[str]) -> dict[str, Any]:
    """Per-class and overall metrics of one classifier head.

    Returns a JSON-ready dictionary::

        {"classes": [...],
         "per_class": {name: {"precision", "recall", "f1", "support", "predicted"}},
         "overall": {"accuracy", "weighted_f1", "macro_f1", "n"},
         "confusion": [[...], ...]}          # rows = true class, columns = predicted class

    Scores are fractions in [0, 1]; ``support`` and ``predicted`` are counts.
    """
    names = [str(c) for c in classes] if not isinstance(classes, str) else []
    if not names:
        raise InputError(f"classes must be a non-empty sequence of class names, got {classes!r}")
    if len(set(names)) != len(names):
        dupes = sorted({c for c in names if names.count(c) > 1})
        raise InputError(f"classes must be unique names, got duplicates: {', '.join(dupes)}")
    cm = confusion_matrix(y_true, y_pred, len(names))
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2.0 * precision * recall, precision + recall)
    n = int(cm.sum())
    present = (support + predicted) > 0
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
        for i, name in enumerate(names)
    }
    overall = {
        "accuracy": float(tp.sum() / n),
        "weighted_f1": float((f1 * support).sum() / n),
        "macro_f1": float(f1[present].mean()),  # n > 0, so at least one class is present
        "n": n,
    }
    return {"classes": names, "per_class": per_class, "overall": overall, "confusion": cm.tolist()}
