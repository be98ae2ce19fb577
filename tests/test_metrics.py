"""Metrics against hand-computed examples and an independent loop-based computation."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from edge.errors import DataError, InputError
from edge.labels import CLASSES
from edge.train.metrics import classification_metrics, confusion_matrix

# Ten samples, five classes.  Class 3 is never predicted; class 4 has no support but is predicted once;
# class 5 ("unused") appears in neither.
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 3]
Y_PRED = [0, 0, 1, 4, 1, 1, 0, 2, 1, 0]
NAMES = ["c0", "c1", "c2", "c3", "c4", "unused"]


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 6)
    expected = np.zeros((6, 6), dtype=np.int64)
    expected[0] = [2, 1, 0, 0, 1, 0]
    expected[1] = [1, 2, 0, 0, 0, 0]
    expected[2] = [0, 1, 1, 0, 0, 0]
    expected[3] = [1, 0, 0, 0, 0, 0]
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, expected)


def test_classification_metrics_by_hand():
    m = classification_metrics(Y_TRUE, Y_PRED, NAMES)
    pc = m["per_class"]
    # c0: TP 2, predicted 4, support 4.
    assert pc["c0"]["precision"] == pytest.approx(0.5)
    assert pc["c0"]["recall"] == pytest.approx(0.5)
    assert pc["c0"]["f1"] == pytest.approx(0.5)
    # c1: TP 2, predicted 4, support 3 -> P 1/2, R 2/3, F1 = 2PR/(P+R) = 4/7.
    assert pc["c1"]["precision"] == pytest.approx(0.5)
    assert pc["c1"]["recall"] == pytest.approx(2 / 3)
    assert pc["c1"]["f1"] == pytest.approx(4 / 7)
    # c2: TP 1, predicted 1, support 2 -> P 1, R 1/2, F1 2/3.
    assert pc["c2"]["f1"] == pytest.approx(2 / 3)
    # c3: never predicted; c4: no support; unused: neither.  All zero, none NaN.
    for name in ("c3", "c4", "unused"):
        assert pc[name]["precision"] == 0.0 and pc[name]["recall"] == 0.0 and pc[name]["f1"] == 0.0
    assert [pc[c]["support"] for c in NAMES] == [4, 3, 2, 1, 0, 0]
    assert [pc[c]["predicted"] for c in NAMES] == [4, 4, 1, 0, 1, 0]

    ov = m["overall"]
    assert ov["n"] == 10
    assert ov["accuracy"] == pytest.approx(0.5)
    # weighted F1 = (4 * 1/2 + 3 * 4/7 + 2 * 2/3 + 1 * 0) / 10 = 53/105
    assert ov["weighted_f1"] == pytest.approx(float(Fraction(53, 105)))
    # macro over the classes present in y_true or y_pred (c0..c4, not "unused").
    assert ov["macro_f1"] == pytest.approx((0.5 + 4 / 7 + 2 / 3 + 0 + 0) / 5)
    assert m["classes"] == NAMES
    assert m["confusion"][0] == [2, 1, 0, 0, 1, 0]


def _reference(y_true, y_pred, k):
    """Independent, loop-based per-class F1 (no numpy tricks shared with the implementation)."""
    f1s, supports = [], []
    for c in range(k):
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == c and p != c)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)  # F1 = 2TP / (2TP + FP + FN)
        supports.append(tp + fn)
    return f1s, supports


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_independent_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200))
    y_true = rng.integers(0, 7, n).tolist()
    y_pred = [t if rng.random() < 0.5 else int(rng.integers(0, 7)) for t in y_true]
    m = classification_metrics(y_true, y_pred, CLASSES)
    f1s, supports = _reference(y_true, y_pred, 7)
    for name, f1, sup in zip(CLASSES, f1s, supports):
        assert m["per_class"][name]["f1"] == pytest.approx(f1)
        assert m["per_class"][name]["support"] == sup
    assert m["overall"]["weighted_f1"] == pytest.approx(sum(f * s for f, s in zip(f1s, supports)) / n)
    assert m["overall"]["accuracy"] == pytest.approx(sum(t == p for t, p in zip(y_true, y_pred)) / n)
    cm = np.array(m["confusion"])
    assert cm.sum() == n and np.trace(cm) == sum(t == p for t, p in zip(y_true, y_pred))


def test_perfect_and_single_sample():
    m = classification_metrics([2, 2, 5], [2, 2, 5], CLASSES)
    assert m["overall"]["accuracy"] == 1.0 and m["overall"]["weighted_f1"] == 1.0
    assert m["overall"]["macro_f1"] == 1.0  # absent classes are not averaged in
    one = classification_metrics(np.array([0]), np.array([1]), CLASSES)
    values = [v for d in one["per_class"].values() for v in d.values()] + list(one["overall"].values())
    assert not any(isinstance(v, float) and math.isnan(v) for v in values)
    assert one["overall"]["accuracy"] == 0.0 and one["overall"]["macro_f1"] == 0.0


def test_numpy_integer_dtypes_accepted():
    m = classification_metrics(np.array(Y_TRUE, dtype=np.int8), np.array(Y_PRED, dtype=np.uint16), NAMES)
    assert m["overall"]["accuracy"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "y_true, y_pred, match",
    [
        ([0, 1, 2], [0, 1], r"same length.*got 3 and 2"),
        ([], [], r"y_true: expected at least one class index"),
        ([0, 7], [0, 1], r"y_true: expected class indices in 0\.\.6, got 7 at position 1"),
        ([0, 1], [0, -1], r"y_pred: expected class indices in 0\.\.6, got -1"),
        ([0.0, 1.5], [0, 1], r"y_true: expected integer class indices.*float64"),
        ([[0, 1]], [[0, 1]], r"y_true: expected a 1-D sequence.*shape \(1, 2\)"),
    ],
)
def test_invalid_labels(y_true, y_pred, match):
    with pytest.raises(DataError, match=match):
        classification_metrics(y_true, y_pred, CLASSES)


def test_invalid_classes_and_num_classes():
    with pytest.raises(InputError, match="non-empty sequence of class names"):
        classification_metrics([0], [0], [])
    with pytest.raises(InputError, match="duplicates: a"):
        classification_metrics([0], [0], ["a", "b", "a"])
    with pytest.raises(InputError, match="num_classes must be a positive integer"):
        confusion_matrix([0], [0], 0)
