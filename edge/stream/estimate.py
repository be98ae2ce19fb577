"""Estimates: what the live loop emits several times a second, and the smoothing that produces them.

Missing modalities (documented behaviour, tested): a modality with no evidence in the window -- no face in any
frame, no speech in the audio, no transcript yet -- is *unavailable*: its probabilities are ``None``, its label is
``None``, and LFMIM receives zero features for it (what padding gives during training).  The fused estimate is
made from the modalities that are available and says which those were; with none available there is no fused
estimate at all.  Nothing is made up: smoothing state of an unavailable modality is kept, not advanced.

Probabilities are calibrated (the build's per-head calibration, applied by the extractors); ``uncertain`` and
``uncertain_reasons`` follow the rule of :mod:`edge.stream.uncertainty` (low fused confidence, confident modalities
that disagree, or no evidence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from edge.errors import InputError
from edge.stream.uncertainty import uncertainty

MODALITIES = ("text", "audio", "vision")
OUTPUTS = (*MODALITIES, "fused")


@dataclass(frozen=True)
class Estimate:
    """One rolling estimate.

    ``probs`` and ``raw`` map text / audio / vision / fused to a probability list over ``classes`` (smoothed and
    as computed) or ``None`` when unavailable; ``age_s`` is how old each modality's newest evidence is at
    ``media_time``; ``latency_ms`` holds each stage's compute time for this estimate and ``end_to_end`` (capture
    time of the newest sample used -> emitted).
    """

    index: int
    time: float
    media_time: float
    classes: tuple[str, ...]
    probs: dict[str, list[float] | None]
    raw: dict[str, list[float] | None]
    available: dict[str, bool]
    age_s: dict[str, float | None]
    transcript: str
    latency_ms: dict[str, float]
    faces: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, float] = field(default_factory=dict)
    #: modality (or "fused") -> why it is unavailable because a part of the loop failed (edge.stream.failures)
    reasons: dict[str, str] = field(default_factory=dict)
    uncertain: bool = False
    uncertain_reasons: tuple[str, ...] = ()

    def label(self, output: str = "fused") -> str | None:
        p = self.probs.get(output)
        return None if p is None else self.classes[int(np.argmax(p))]

    def confidence(self, output: str = "fused") -> float | None:
        p = self.probs.get(output)
        return None if p is None else float(max(p))

    def to_dict(self) -> dict[str, Any]:
        def rnd(p):
            return None if p is None else [round(float(x), 5) for x in p]

        return {
            "index": self.index, "time": round(self.time, 4), "media_time": round(self.media_time, 4),
            "label": self.label(), "confidence": None if self.confidence() is None else round(self.confidence(), 5),
            "uncertain": self.uncertain, "uncertain_reasons": list(self.uncertain_reasons),
            "labels": {o: self.label(o) for o in OUTPUTS},
            "probs": {o: rnd(self.probs.get(o)) for o in OUTPUTS},
            "raw": {o: rnd(self.raw.get(o)) for o in OUTPUTS},
            "available": dict(self.available),
            "age_s": {m: None if a is None else round(a, 4) for m, a in self.age_s.items()},
            "transcript": self.transcript, "classes": list(self.classes),
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
            "faces": dict(self.faces), "dropped": dict(self.dropped), "failed": dict(self.reasons),
        }


class Smoother:
    """Per-output smoothing of probability vectors: ``ema`` (alpha = weight of the newest estimate), ``mean``
    over the last ``window`` estimates, or ``none``.  Per stream; ``reset()`` between streams."""

    KINDS = ("ema", "mean", "none")

    def __init__(self, kind: str = "ema", *, alpha: float = 0.5, window: int = 4) -> None:
        if kind not in self.KINDS:
            raise InputError(f"smoothing {kind!r}: expected one of {', '.join(self.KINDS)}")
        if not 0.0 < alpha <= 1.0 or not math.isfinite(alpha):
            raise InputError(f"smoothing alpha must lie in (0, 1], got {alpha}")
        if window < 1:
            raise InputError(f"smoothing window must be at least 1, got {window}")
        self.kind, self.alpha, self.window = kind, alpha, window
        self.reset()

    def reset(self) -> None:
        self._state: dict[str, np.ndarray] = {}
        self._history: dict[str, list[np.ndarray]] = {}

    def __call__(self, output: str, probs: np.ndarray | None) -> np.ndarray | None:
        if probs is None:
            return None  # unavailable: the state stays as it was
        p = np.asarray(probs, dtype=np.float64)
        if self.kind == "none":
            return p
        if self.kind == "ema":
            prev = self._state.get(output)
            self._state[output] = p if prev is None else self.alpha * p + (1.0 - self.alpha) * prev
            return self._state[output]
        hist = self._history.setdefault(output, [])
        hist.append(p)
        del hist[: -self.window]
        return np.mean(hist, axis=0)


def make_estimate(index: int, *, time: float, media_time: float, classes: tuple[str, ...],
                  raw: Mapping[str, np.ndarray | None], smoother: Smoother, available: Mapping[str, bool],
                  age_s: Mapping[str, float | None], transcript: str, latency_ms: Mapping[str, float],
                  faces: Mapping[str, int] | None = None, dropped: Mapping[str, float] | None = None,
                  reasons: Mapping[str, str] | None = None) -> Estimate:
    smoothed = {o: smoother(o, raw.get(o)) for o in OUTPUTS}
    as_list = {o: (None if v is None else [float(x) for x in v]) for o, v in smoothed.items()}
    raw_list = {o: (None if raw.get(o) is None else [float(x) for x in raw[o]]) for o in OUTPUTS}
    uncertain, why_uncertain = uncertainty(as_list)
    return Estimate(index=index, time=time, media_time=media_time, classes=tuple(classes), probs=as_list,
                    raw=raw_list, available=dict(available), age_s=dict(age_s), transcript=transcript,
                    latency_ms=dict(latency_ms), faces=dict(faces or {}), dropped=dict(dropped or {}),
                    reasons=dict(reasons or {}), uncertain=uncertain, uncertain_reasons=tuple(why_uncertain))
