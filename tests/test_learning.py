"""LFMIM learns what the paper says it learns, on a synthetic set with a known structure (about a minute on
2 CPU cores).

Each modality's features carry only its own label; each uni-modal label equals the multi-modal label with
probability AGREE (otherwise another class), independently.  So:
- each uni-modal head can learn its own label from its own features: it must reach UNI_MIN accuracy on it;
- no uni-modal head can know the multi-modal label better than AGREE (= 0.7) in expectation; the fused head
  sees evidence from all three modalities (Bayes rate about 0.84 here) and must beat the best uni-modal head
  on the multi-modal label by at least FUSED_MARGIN.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (the training extras: pip install 'lfmim-edge[train]')")

from edge.config import PRESETS, TrainConfig  # noqa: E402
from edge.model.lfmim import LFMIM  # noqa: E402
from edge.train.inconsistency import inconsistency_stats  # noqa: E402
from edge.train.loop import Trainer, predict  # noqa: E402
from edge.train.store import FeatureStore  # noqa: E402
from edge.train.synthetic import expected_inconsistency, write_synthetic_store  # noqa: E402

AGREE = 0.7
UNI_MIN = 0.85
FUSED_MARGIN = 0.04

pytestmark = pytest.mark.slow


def test_unimodal_heads_learn_their_own_labels_and_fusion_beats_them(tmp_path):
    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    root = write_synthetic_store(tmp_path / "synth", cfg, sizes={"train": 1500, "valid": 300, "test": 600},
                                 agree=AGREE, seed=11)
    store = FeatureStore(root)

    # The store's labels disagree at the rate the generator promises (within sampling error).
    stats = inconsistency_stats(store.split("train").labels())
    want = expected_inconsistency(AGREE, 7)
    assert stats["pairs"]["t-m"] == pytest.approx(want["uni_multi"], abs=0.04)
    assert stats["pairs"]["a-v"] == pytest.approx(want["uni_uni"], abs=0.04)

    tc = TrainConfig(epochs=5, batch_size=32, optimizer="adamw", lr=0.002, schedule="constant", seed=0)
    trainer = Trainer(LFMIM(cfg), "paper", cfg.to_dict(), tc, tmp_path / "run", progress=False)
    trainer.fit(store.split("train"), store.split("valid"), cfg.classes)

    preds, _ = predict(trainer.model, store.split("test"))
    labels = store.split("test").labels()
    own = {h: float(np.mean(preds[h].y_pred == labels[:, i])) for i, h in enumerate("tav")}
    on_multi = {h: float(np.mean(preds[h].y_pred == labels[:, 3])) for h in "tavm"}
    print("accuracy on own label:", own, "on the multi-modal label:", on_multi)
    for head, acc in own.items():
        assert acc >= UNI_MIN, f"{head} head reached only {acc:.3f} on its own label"
    best_uni = max(on_multi[h] for h in "tav")
    assert on_multi["m"] >= best_uni + FUSED_MARGIN, f"fused {on_multi['m']:.3f} vs best uni-modal {best_uni:.3f}"
