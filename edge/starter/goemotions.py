"""GoEmotions-Ekman splits (``../shared/data/goemotions-ekman``), read without torch: the run-path checks
(``scripts/compare_precisions.py``) read the test split on a kiosk install."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.errors import DataError
from edge.labels import to_index

__all__ = ["read_goemotions"]


def read_goemotions(path: str | Path, *, single_label: bool = True) -> tuple[list[str], np.ndarray]:
    """A GoEmotions-Ekman split (``text<TAB>label ids<TAB>comment id``) -> (texts, canonical class indices).

    Label ids index ``labels.txt`` (anger, disgust, fear, joy, neutral, sadness, surprise; joy = happiness).
    With ``single_label`` (the default, used for training and for the test metric) rows with several labels are
    skipped; otherwise such rows are an error.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: GoEmotions split not found; pass the goemotions-ekman folder of ../shared/data")
    texts: list[str] = []
    labels: list[int] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise DataError(f"{path}:{lineno}: expected text<TAB>label ids<TAB>comment id, got {line[:80]!r}")
        ids = [s for s in parts[1].split(",") if s.strip()]
        if len(ids) != 1:
            if single_label:
                continue
            raise DataError(f"{path}:{lineno}: {len(ids)} labels on one row; read with single_label=True")
        texts.append(parts[0])
        labels.append(to_index(ids[0], "goemotions", source=f"{path}:{lineno}"))
    if not texts:
        raise DataError(f"{path}: no single-label rows")
    return texts, np.asarray(labels, dtype=np.int64)
