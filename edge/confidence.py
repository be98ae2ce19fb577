"""Confidences that mean what they say: per-head calibration of LFMIM's logits, expected calibration error and
reliability bins (numpy only: the run path applies the calibration a build records).

A head's calibrated probabilities are ``softmax(logits / T + b)``:

- ``T`` (temperature, > 0) is fitted on a validation split by minimising the negative log-likelihood (temperature
  scaling, Guo et al. 2017): it changes how confident the head is, never which class it picks;
- ``b`` (optional, one value per class, ``method="temperature+prior"``) is a prior correction fitted jointly with
  ``T`` on the same split: it moves the head from the class priors it was trained under to those of the
  validation data (and so may change the top class).  Without it ``b`` is zero.

Both are convex problems in ``(1 / T, b)``; they are solved by damped Newton steps on ``1 / T`` alone or by
gradient descent with backtracking on ``(1 / T, b)``.

Expected calibration error (ECE): the top-class confidence of each sample is put into ``bins`` equal-width bins over
[0, 1]; ECE = sum over bins of (samples in the bin / N) * |accuracy in the bin - mean confidence in the bin|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from edge.errors import DataError, InputError

FORMAT = "lfmim-edge-calibration/1"
HEAD_KEYS: tuple[str, ...] = ("t", "a", "v", "m")
METHODS: tuple[str, ...] = ("temperature", "temperature+prior")
#: Equal-width confidence bins of the ECE and of the reliability diagrams.
ECE_BINS = 15
#: Range the fitted temperature is kept in.
T_MIN, T_MAX = 0.05, 20.0
#: L2 penalty on the prior correction ``b`` (per sample mean NLL units): keeps ``b`` finite for a class the
#: validation split lacks.
PRIOR_L2 = 1e-3


# ------------------------------------------------------------------------------------------------ basics


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def _check(logits: Any, labels: Any, *, name: str) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise DataError(f"{name}: expected logits of shape (N >= 1, classes >= 2), got {z.shape}")
    if y.shape != (z.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: expected {z.shape[0]} integer labels, got an array of shape {y.shape} ({y.dtype})")
    if ((y < 0) | (y >= z.shape[1])).any():
        raise DataError(f"{name}: labels must be class indices 0..{z.shape[1] - 1}; drop unlabelled (-1) rows first")
    if not np.isfinite(z).all():
        raise DataError(f"{name}: logits contain NaN or infinity")
    return z, y.astype(np.int64)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, bias: np.ndarray | None = None) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature + bias)``."""
    z, y = _check(logits, labels, name="nll")
    s = z / float(temperature) + (0.0 if bias is None else np.asarray(bias, np.float64))
    return float(-log_softmax(s)[np.arange(len(y)), y].mean())


# ------------------------------------------------------------------------------------------------ fitting


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, iterations: int = 100) -> float:
    """The temperature minimising the NLL of ``labels`` (damped Newton on beta = 1 / T, which is convex)."""
    z, y = _check(logits, labels, name="fit_temperature")
    picked = z[np.arange(len(y)), y]
    beta = 1.0
    for _ in range(iterations):
        p = softmax(beta * z)
        mean_z = (p * z).sum(axis=1)
        grad = float((mean_z - picked).mean())  # d NLL / d beta
        hess = float(((p * z * z).sum(axis=1) - mean_z ** 2).mean())  # variance of z under p, >= 0
        step = grad / hess if hess > 1e-12 else math.copysign(0.5, grad)
        step = max(-0.5 * beta, min(step, 2.0 * beta))  # damped: beta stays positive
        beta = min(max(beta - step, 1.0 / T_MAX), 1.0 / T_MIN)
        if abs(step) < 1e-7 * beta:
            break
    return 1.0 / beta


def fit_temperature_prior(logits: np.ndarray, labels: np.ndarray, *, iterations: int = 500
                          ) -> tuple[float, np.ndarray]:
    """Temperature and per-class prior correction ``b`` minimising NLL + PRIOR_L2 * |b|^2 (gradient descent with
    backtracking on the convex objective in (1 / T, b)); ``b`` is centred (a shift of all classes changes nothing)."""
    z, y = _check(logits, labels, name="fit_temperature_prior")
    k = z.shape[1]
    onehot = np.eye(k)[y]
    beta, b = 1.0 / fit_temperature(z, y), np.zeros(k)

    def objective(beta_: float, b_: np.ndarray) -> float:
        return float(-log_softmax(beta_ * z + b_)[np.arange(len(y)), y].mean() + PRIOR_L2 * (b_ ** 2).sum())

    value, lr = objective(beta, b), 1.0
    for _ in range(iterations):
        p = softmax(beta * z + b)
        diff = p - onehot
        g_beta = float((diff * z).sum(axis=1).mean())
        g_b = diff.mean(axis=0) + 2.0 * PRIOR_L2 * b
        while lr > 1e-8:
            nb = min(max(beta - lr * g_beta, 1.0 / T_MAX), 1.0 / T_MIN)
            cand_b = b - lr * g_b
            cand = objective(nb, cand_b)
            if cand <= value - 1e-4 * lr * (g_beta ** 2 + float((g_b ** 2).sum())):
                break
            lr *= 0.5
        else:
            break
        done = value - cand < 1e-10
        beta, b, value, lr = nb, cand_b, cand, min(lr * 2.0, 4.0)
        if done:
            break
    return 1.0 / beta, b - b.mean()


# ------------------------------------------------------------------------------------------------ measuring


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, list]:
    """Per equal-width confidence bin: sample count, mean top-class confidence and accuracy (None when empty)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or len(p) != len(y) or len(p) == 0:
        raise DataError(f"reliability_bins: expected (N, classes) probabilities and N labels, got {p.shape}, {y.shape}")
    if bins < 1:
        raise InputError(f"bins must be at least 1, got {bins}")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    index = np.minimum((conf * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    acc_sum = np.bincount(index, weights=correct, minlength=bins)
    return {"edges": np.linspace(0.0, 1.0, bins + 1).round(6).tolist(), "count": count.tolist(),
            "confidence": [float(c / n) if n else None for c, n in zip(conf_sum, count)],
            "accuracy": [float(a / n) if n else None for a, n in zip(acc_sum, count)]}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width bins of the top-class confidence (see the module docstring)."""
    r = reliability_bins(probs, labels, bins)
    n = sum(r["count"])
    return float(sum(c / n * abs(a - f) for c, a, f in zip(r["count"], r["accuracy"], r["confidence"]) if c))


def ece_noise_floor(probs: np.ndarray, bins: int = ECE_BINS, *, draws: int = 400, seed: int = 0) -> dict[str, float]:
    """The ECE a *perfectly calibrated* head with these top-class confidences would show on this many samples.

    Each draw marks every sample correct with probability equal to its confidence (what perfect calibration means)
    and measures the ECE; the mean and the 95th percentile over ``draws`` say how large an ECE finite-sample noise
    alone produces.  A measured ECE below the 95th percentile cannot be told apart from perfect calibration on this
    split (on 120 samples that is typically about 0.1; on thousands, about 0.01).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise DataError(f"expected probabilities of shape (N >= 1, classes), got {p.shape}")
    if draws < 1:
        raise InputError(f"draws must be at least 1, got {draws}")
    conf = p.max(axis=1)
    index = np.minimum((conf * bins).astype(np.int64), bins - 1)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    rng = np.random.default_rng(seed)
    correct = rng.random((draws, conf.size)) < conf  # (draws, N)
    acc_sum = np.stack([np.bincount(index, weights=row, minlength=bins) for row in correct.astype(np.float64)])
    ece = np.abs(acc_sum - conf_sum).sum(axis=1) / conf.size  # sum_b n_b/N |acc_b - conf_b|
    return {"mean": float(ece.mean()), "p95": float(np.quantile(ece, 0.95)), "draws": int(draws)}


# ------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class HeadCalibration:
    """One head's calibration: ``softmax(logits / temperature + bias)``; ``fitted`` says on what it was fitted."""

    temperature: float = 1.0
    bias: tuple[float, ...] | None = None
    fitted: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise InputError(f"calibration temperature must be a positive number, got {self.temperature!r}")
        if self.bias is not None and not all(math.isfinite(float(v)) for v in self.bias):
            raise InputError("calibration bias must hold finite numbers")

    def logits(self, logits: np.ndarray) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64) / self.temperature
        if self.bias is not None:
            if len(self.bias) != z.shape[-1]:
                raise InputError(f"calibration has a prior correction for {len(self.bias)} classes, the head gives "
                                 f"{z.shape[-1]} logits; recalibrate the checkpoint (edge-eval --calibrate)")
            z = z + np.asarray(self.bias, np.float64)
        return z

    def probs(self, logits: np.ndarray) -> np.ndarray:
        return softmax(self.logits(logits))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"temperature": round(float(self.temperature), 6)}
        if self.bias is not None:
            out["bias"] = [round(float(v), 6) for v in self.bias]
        if self.fitted:
            out["fitted"] = dict(self.fitted)
        return out


@dataclass(frozen=True)
class Calibration:
    """Calibration of LFMIM's four heads (t, a, v, m); a head without an entry is left as it is (T = 1)."""

    heads: Mapping[str, HeadCalibration] = field(default_factory=dict)
    method: str = "temperature"

    def __post_init__(self) -> None:
        unknown = [h for h in self.heads if h not in HEAD_KEYS]
        if unknown:
            raise InputError(f"calibration for unknown head(s) {unknown}; heads are {', '.join(HEAD_KEYS)}")
        if self.method not in METHODS + ("none",):
            raise InputError(f"calibration method {self.method!r}: expected one of {', '.join(METHODS)}")

    def head(self, name: str) -> HeadCalibration:
        return self.heads.get(name) or HeadCalibration()

    def probs(self, name: str, logits: np.ndarray) -> np.ndarray:
        return self.head(name).probs(logits)

    @property
    def is_identity(self) -> bool:
        return all(h.temperature == 1.0 and h.bias is None for h in self.heads.values())

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "method": self.method, "heads": {h: c.to_dict() for h, c in self.heads.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, source: str = "calibration") -> "Calibration":
        """Read :meth:`to_dict`'s form; None or {} gives the identity (no calibration recorded)."""
        if not data:
            return cls(method="none")
        fmt = data.get("format") if isinstance(data, Mapping) else type(data).__name__
        if fmt != FORMAT:
            raise InputError(f"{source}: not a calibration record (format {fmt!r}, expected {FORMAT!r}); "
                             "recalibrate the checkpoint with edge-eval --calibrate")
        heads = {}
        for name, entry in (data.get("heads") or {}).items():
            try:
                bias = entry.get("bias")
                heads[name] = HeadCalibration(float(entry["temperature"]), None if bias is None else tuple(map(float, bias)),
                                              dict(entry.get("fitted") or {}))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise InputError(f"{source}: head {name!r} has a damaged calibration entry ({exc}); recalibrate "
                                 "the checkpoint with edge-eval --calibrate") from None
        return cls(heads, str(data.get("method", "temperature")))


def fit_calibration(per_head: Mapping[str, tuple[np.ndarray, np.ndarray, str]], *, method: str = "temperature",
                    bins: int = ECE_BINS) -> Calibration:
    """Fit each head's calibration on its validation ``(logits, labels, split name)``; the record keeps the split,
    its size and the NLL / ECE there before and after."""
    if method not in METHODS:
        raise InputError(f"calibration method {method!r}: expected one of {', '.join(METHODS)}")
    heads = {}
    for name, (logits, labels, split) in per_head.items():
        z, y = _check(logits, labels, name=f"head {name} on {split}")
        if method == "temperature":
            t, b = fit_temperature(z, y), None
        else:
            t, bias = fit_temperature_prior(z, y)
            b = tuple(float(v) for v in bias)
        cal = HeadCalibration(t, b)
        fitted = {"split": split, "n": int(len(y)),
                  "nll_before": round(nll(z, y), 5), "nll_after": round(nll(z, y, t, None if b is None else np.array(b)), 5),
                  "ece_before": round(expected_calibration_error(softmax(z), y, bins), 5),
                  "ece_after": round(expected_calibration_error(cal.probs(z), y, bins), 5)}
        heads[name] = HeadCalibration(t, b, fitted)
    return Calibration(heads, method)


def parse_head_splits(items: Sequence[str], default: str) -> dict[str, str]:
    """``["a=ravdess_valid", "v=fer_valid"]`` -> split per head (the others: ``default``)."""
    out = {h: default for h in HEAD_KEYS}
    for item in items:
        head, sep, split = item.partition("=")
        if not sep or head not in HEAD_KEYS or not split:
            raise InputError(f"--head-split {item!r}: expected HEAD=SPLIT with HEAD one of {', '.join(HEAD_KEYS)} "
                             "(for example a=ravdess_valid)")
        out[head] = split
    return out
