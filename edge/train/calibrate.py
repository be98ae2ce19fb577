"""Fit each head's calibration of an LFMIM checkpoint on validation splits and store it in the checkpoint.

``edge-eval --calibrate`` runs :func:`calibrate_checkpoint`: every head is scored on its own label of the split
named for it (by default ``valid`` for all four; the starter recipe names each modality's own validation set,
for example ``v=fer_valid``), :func:`edge.confidence.fit_calibration` fits its temperature (and, with
``method="temperature+prior"``, a prior correction), and the checkpoint is rewritten atomically with the result in
its metadata (``meta.calibration``) and its JSON sidecar.  ``edge-build`` copies it into the build's manifest, and
the run path applies it to every estimate.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

from edge.confidence import Calibration, fit_calibration
from edge.config import HEAD_NAMES
from edge.errors import DataError

log = logging.getLogger("edge")


def calibrate_checkpoint(checkpoint: str | Path, store: str | Path, head_splits: Mapping[str, str], *,
                         method: str = "temperature", out: str | Path | None = None, batch_size: int = 64,
                         device: str = "cpu", progress: bool = True) -> Calibration:
    """Fit the calibration of every head in ``head_splits`` (head -> split) and write it into the checkpoint
    (``out``, default: the checkpoint itself).  Returns the calibration."""
    from edge.model.checkpoint import save_checkpoint
    from edge.model.loading import input_specs, load_model
    from edge.train.loop import check_store_matches, predict
    from edge.train.store import FeatureStore

    model, ckpt = load_model(checkpoint, device=device)
    fs = FeatureStore(store)
    check_store_matches(fs.specs, input_specs(ckpt.variant, ckpt.config), store=str(store))
    per_head = {}
    by_split: dict[str, list[str]] = {}
    for head, split in head_splits.items():
        by_split.setdefault(split, []).append(head)
    for split, heads in by_split.items():
        if split not in fs.splits:
            raise DataError(f"{store}: no split {split!r} to calibrate head(s) {', '.join(heads)} on; the store has "
                            f"{', '.join(fs.splits)}")
        preds, _ = predict(model, fs.split(split), batch_size=batch_size, device=device, progress=progress,
                           desc=f"calibrate on {split}")
        for head in heads:
            p = preds[head]
            if not len(p.y_true):
                raise DataError(f"{store}: split {split!r} has no {HEAD_NAMES[head]} label to calibrate that head on; "
                                "name another split with --head-split")
            per_head[head] = (p.logits, p.y_true, split)
    calibration = fit_calibration(per_head, method=method)
    for head, cal in calibration.heads.items():
        f = cal.fitted
        log.info("%s head: T = %.3f on %s (n = %d): ECE %.3f -> %.3f, NLL %.3f -> %.3f", HEAD_NAMES[head],
                 cal.temperature, f["split"], f["n"], f["ece_before"], f["ece_after"], f["nll_before"], f["nll_after"])
    target = Path(out or checkpoint)
    meta = {**ckpt.meta, "calibration": calibration.to_dict()}
    save_checkpoint(target, ckpt.state, ckpt.config, variant=ckpt.variant, meta=meta)
    return calibration


def checkpoint_calibration(meta: Mapping) -> Calibration | None:
    """The calibration a checkpoint's metadata records, or None."""
    record = meta.get("calibration")
    return Calibration.from_dict(record, source="checkpoint meta.calibration") if record else None
