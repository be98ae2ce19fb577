"""When an estimate is uncertain: the documented rule every estimate applies (numpy only).

The probabilities are the calibrated ones (each head's calibration is fitted on validation data and recorded in
the build, see :mod:`edge.confidence`), so a confidence of 0.6 means "right about 6 times in 10" on data like the
validation data.  An estimate is *uncertain* when at least one of these holds (its ``uncertain_reasons`` name
which):

- ``low_confidence``: the fused estimate's top probability is below :data:`LOW_CONFIDENCE` (0.5): the model
  expects to be wrong more often than right;
- ``modalities_disagree``: two available modalities name different top classes while each is confident, top
  probability at least :data:`DISAGREE_CONFIDENCE` (0.6): the face says one thing and the voice another, which the
  fused head resolves but which a user of the estimate should know about;
- ``no_evidence``: no modality is available, so there is no fused estimate at all.

The rule reads the estimate's own (smoothed) probabilities, the ones its ``label`` and ``confidence`` come from.
Thresholds are fixed constants: they do not depend on the machine or on the data the estimate is made of.
"""

from __future__ import annotations

from itertools import combinations
from typing import Mapping, Sequence

import numpy as np

#: Fused top probability below which an estimate is uncertain.
LOW_CONFIDENCE = 0.5
#: Top probability from which a modality counts as confident when it disagrees with another.
DISAGREE_CONFIDENCE = 0.6
MODALITIES = ("text", "audio", "vision")


def uncertainty(probs: Mapping[str, Sequence[float] | None], *, low: float = LOW_CONFIDENCE,
                disagree: float = DISAGREE_CONFIDENCE) -> tuple[bool, list[str]]:
    """(uncertain, reasons) of one estimate from its per-output probabilities (``None``: unavailable)."""
    reasons = []
    fused = probs.get("fused")
    if fused is None:
        reasons.append("no_evidence")
    elif float(np.max(fused)) < low:
        reasons.append("low_confidence")
    confident = {m: int(np.argmax(p)) for m in MODALITIES if (p := probs.get(m)) is not None
                 and float(np.max(p)) >= disagree}
    if any(confident[a] != confident[b] for a, b in combinations(confident, 2)):
        reasons.append("modalities_disagree")
    return bool(reasons), reasons
