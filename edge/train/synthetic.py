"""A synthetic feature store with known structure, for learning tests and end-to-end checks.

Each sample has a multi-modal label y_m drawn uniformly.  Each uni-modal label y_u equals y_m with
probability ``agree`` and is otherwise a uniformly drawn *different* class, independently per modality, so
Incon(u, m) = 1 - agree and Incon(u1, u2) = 1 - agree**2 - (1 - agree)**2 / (C - 1) in expectation.
Modality u's features carry y_u only: every time step is a class prototype (a fixed random direction per
modality and class) scaled by ``signal`` plus unit Gaussian noise.  Hence each uni-modal head can learn its own
label from its own features, no uni-modal head can know y_m better than ``agree``, and a fused head that sees
all three can do better (majority evidence): the property LFMIM's multi-modal module exploits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.config import LFMIMConfig, MODALITIES
from edge.labels import CLASSES


def expected_inconsistency(agree: float, num_classes: int) -> dict[str, float]:
    return {
        "uni_multi": 1.0 - agree,
        "uni_uni": 1.0 - agree**2 - (1.0 - agree) ** 2 / (num_classes - 1),
    }


def draw_labels(n: int, agree: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 4) labels t, a, v, m with the disagreement structure described above."""
    y_m = rng.integers(0, num_classes, size=n)
    labels = np.empty((n, 4), dtype=np.int64)
    labels[:, 3] = y_m
    for u in range(3):
        other = (y_m + rng.integers(1, num_classes, size=n)) % num_classes  # uniform over the other classes
        labels[:, u] = np.where(rng.random(n) < agree, y_m, other)
    return labels


def write_synthetic_store(
    root: str | Path,
    config: LFMIMConfig,
    *,
    sizes: dict[str, int] | None = None,
    agree: float = 0.7,
    signal: float = 1.0,
    seed: int = 0,
    classes: tuple[str, ...] = CLASSES,
    progress: bool = False,
) -> Path:
    """Write a synthetic store fitting ``config``'s feature specs; returns its root."""
    from edge.train.store_writer import FeatureStoreWriter

    tqdm = __import__("tqdm").tqdm
    sizes = sizes or {"train": 2000, "valid": 500, "test": 500}
    rng = np.random.default_rng(seed)
    num_classes = len(classes)
    specs = {m: config.spec(m) for m in MODALITIES}
    prototypes = {}
    for m in MODALITIES:
        raw = rng.standard_normal((num_classes, specs[m].dim))
        prototypes[m] = raw / np.linalg.norm(raw, axis=1, keepdims=True) * np.sqrt(specs[m].dim) * signal / 4.0
    with FeatureStoreWriter(root, specs, classes, dtype="float32") as writer:
        for split, n in sizes.items():
            labels = draw_labels(n, agree, num_classes, rng)
            for i in tqdm(range(n), desc=f"synthetic {split}", disable=not progress, leave=False):
                feats = [
                    (prototypes[m][labels[i, u]] + rng.standard_normal((specs[m].length, specs[m].dim))).astype(np.float32)
                    for u, m in enumerate(MODALITIES)
                ]
                writer.add(split, f"{split}-{i:06d}", *feats, labels[i])
    return Path(root)
