"""Calibration: temperature scaling (and a prior correction) fitted on validation data, ECE, reliability bins,
the record a checkpoint stores and a build copies, and the uncertainty rule of every estimate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.confidence import (
    Calibration, HeadCalibration, ece_noise_floor, expected_calibration_error, fit_calibration, fit_temperature,
    fit_temperature_prior, nll, parse_head_splits, reliability_bins, softmax,
)
from edge.errors import DataError, InputError
from edge.stream.estimate import Smoother, make_estimate
from edge.stream.uncertainty import uncertainty


def _calibrated(n: int = 4000, k: int = 7, seed: int = 0):
    """Logits whose softmax is the true label distribution (labels sampled from it): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 1.5
    p = softmax(logits)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits, labels


def test_temperature_scaling_recovers_the_temperature_of_an_overconfident_head():
    logits, labels = _calibrated()
    t = fit_temperature(logits * 3.0, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(logits * 3.0, labels, t) < nll(logits * 3.0, labels)
    before = expected_calibration_error(softmax(logits * 3.0), labels)
    after = expected_calibration_error(softmax(logits * 3.0 / t), labels)
    assert before > 0.15 and after < 0.03
    # temperature never changes the predicted class
    assert np.array_equal((logits * 3.0 / t).argmax(1), logits.argmax(1))


def test_an_underconfident_head_gets_a_temperature_below_one():
    logits, labels = _calibrated(seed=1)
    assert fit_temperature(logits * 0.4, labels) == pytest.approx(0.4, rel=0.12)


def test_the_prior_correction_undoes_a_shifted_class_prior():
    logits, labels = _calibrated(seed=2)
    shifted = logits + np.array([2.0, 0, 0, 0, 0, 0, 0])  # the head learned to over-predict class 0
    t, bias = fit_temperature_prior(shifted, labels)
    assert abs(bias.sum()) < 1e-6
    assert bias[0] - bias[1:].mean() == pytest.approx(-2.0, abs=0.25)
    fixed = shifted / t + bias
    assert (fixed.argmax(1) == labels).mean() > (shifted.argmax(1) == labels).mean()


def test_ece_and_reliability_bins_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    bins = reliability_bins(probs, labels, bins=10)
    assert bins["count"][9] == 2 and bins["accuracy"][9] == 0.5 and bins["confidence"][9] == pytest.approx(0.9)
    assert bins["count"][6] == 1 and bins["count"][7] == 1 and bins["accuracy"][0] is None
    # (2/4)|0.5-0.9| + (1/4)|1-0.6| + (1/4)|1-0.7|
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.2 + 0.1 + 0.075)


def test_the_ece_noise_floor_bounds_a_calibrated_head_and_shrinks_with_the_sample_count():
    floors = {}
    for n in (120, 720, 4000):
        logits, labels = _calibrated(n=n, seed=n)
        p = softmax(logits)
        floors[n] = ece_noise_floor(p)
        assert floors[n]["mean"] < floors[n]["p95"]
    assert floors[120]["mean"] > 2 * floors[720]["mean"] > 2 * floors[4000]["mean"]
    # heads calibrated by construction: their ECE falls under the floor's mean about half the time and under its
    # 95th percentile about 95 % of the time (40 splits of 300 samples; a floor off by a factor fails either way)
    below_mean = below_p95 = 0
    for seed in range(40):
        logits, labels = _calibrated(n=300, seed=100 + seed)
        p = softmax(logits)
        floor, ece = ece_noise_floor(p, seed=seed), expected_calibration_error(p, labels)
        below_mean += ece < floor["mean"]
        below_p95 += ece < floor["p95"]
    assert 10 <= below_mean <= 30 and below_p95 >= 34
    # an overconfident head's ECE stands well above its floor on the same samples
    logits, labels = _calibrated(n=4000, seed=4000)
    hot = softmax(3 * logits)
    assert expected_calibration_error(hot, labels) > 3 * ece_noise_floor(hot)["p95"]
    # certainty leaves no room for noise: confidence 1 is always right under perfect calibration
    assert ece_noise_floor(np.eye(7)[np.arange(50) % 7])["p95"] == 0.0
    with pytest.raises(DataError):
        ece_noise_floor(np.zeros((0, 7)))


def test_calibration_record_round_trips_and_applies():
    logits, labels = _calibrated(seed=3)
    cal = fit_calibration({"v": (logits * 2.0, labels, "fer_valid"), "m": (logits, labels, "valid")})
    record = json.loads(json.dumps(cal.to_dict()))
    again = Calibration.from_dict(record)
    assert again.head("v").temperature == pytest.approx(cal.head("v").temperature, rel=1e-5)
    assert again.head("v").fitted["split"] == "fer_valid" and again.head("v").fitted["ece_after"] < 0.03
    assert again.head("t").temperature == 1.0  # a head without an entry is left as it is
    z = logits[0] * 2.0
    assert np.allclose(again.probs("v", z), softmax(z / again.head("v").temperature))
    assert Calibration.from_dict(None).is_identity


def test_bad_calibration_input_is_one_clear_error():
    with pytest.raises(InputError, match="not a calibration record"):
        Calibration.from_dict({"format": "other"})
    with pytest.raises(InputError, match="positive number"):
        HeadCalibration(temperature=-1.0)
    with pytest.raises(InputError, match="damaged calibration entry"):
        Calibration.from_dict({"format": "lfmim-edge-calibration/1", "heads": {"v": {"t": 2}}})
    with pytest.raises(DataError, match="drop unlabelled"):
        fit_temperature(np.zeros((3, 7)), np.array([0, -1, 2]))
    with pytest.raises(InputError, match="HEAD=SPLIT"):
        parse_head_splits(["x=valid"], "valid")
    assert parse_head_splits(["v=fer_valid"], "valid") == {"t": "valid", "a": "valid", "v": "fer_valid", "m": "valid"}
    with pytest.raises(InputError, match="prior correction for 3 classes"):
        HeadCalibration(1.0, (0.0, 0.0, 0.0)).probs(np.zeros(7))


def test_uncertainty_rule():
    sure = [0.9, 0.02, 0.02, 0.02, 0.02, 0.01, 0.01]
    other = [0.02, 0.02, 0.02, 0.9, 0.02, 0.01, 0.01]
    flat = [1 / 7] * 7
    assert uncertainty({"fused": sure, "vision": sure, "audio": None, "text": None}) == (False, [])
    assert uncertainty({"fused": flat, "vision": sure}) == (True, ["low_confidence"])
    assert uncertainty({"fused": sure, "vision": sure, "audio": other}) == (True, ["modalities_disagree"])
    # a modality that is not confident does not count as disagreeing
    assert uncertainty({"fused": sure, "vision": sure, "audio": flat}) == (False, [])
    assert uncertainty({"fused": None, "vision": None}) == (True, ["no_evidence"])


def test_every_estimate_carries_the_rule_in_its_json_record():
    sure = np.array([0.9, 0.02, 0.02, 0.02, 0.02, 0.01, 0.01])
    other = np.roll(sure, 3)
    estimate = make_estimate(0, time=1.0, media_time=1.0, classes=tuple("abcdefg"),
                             raw={"text": None, "audio": other, "vision": sure, "fused": sure},
                             smoother=Smoother("none"), available={"text": False, "audio": True, "vision": True},
                             age_s={}, transcript="", latency_ms={})
    record = json.loads(json.dumps(estimate.to_dict()))
    assert record["uncertain"] is True and record["uncertain_reasons"] == ["modalities_disagree"]
