"""Calibration in evaluation reports: ECE before and after each head's calibration, and reliability diagrams.

``calibration_report`` writes ``reliability_<head>.png`` (accuracy against confidence per bin, before and after,
with the bin counts) into the report folder and returns a JSON-ready record and a Markdown section for
``report.md``.  "Before" is the head's plain softmax, "after" the calibration recorded in the checkpoint
(``meta.calibration``, written by ``edge-eval --calibrate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edge.config import HEAD_NAMES
from edge.confidence import (
    ECE_BINS, Calibration, ece_noise_floor, expected_calibration_error, nll, reliability_bins, softmax,
)
from edge.train.reports import format_table, new_figure, save_figure_atomic

__all__ = ["calibration_report", "plot_reliability"]


def plot_reliability(before: Mapping[str, Any], after: Mapping[str, Any] | None, path: str | Path, *,
                     title: str = "") -> Path:
    """Reliability diagram: accuracy per confidence bin before (and after) calibration, the diagonal, counts."""
    fig = new_figure((6.4, 6.4))
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    edges = np.asarray(before["bins"]["edges"])
    centres = 0.5 * (edges[:-1] + edges[1:])
    width = edges[1] - edges[0]
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfectly calibrated")
    series = [("before", before, "#d95f02")] + ([("after", after, "#1b9e77")] if after else [])
    for i, (name, rec, colour) in enumerate(series):
        acc = [np.nan if a is None else a for a in rec["bins"]["accuracy"]]
        conf = [np.nan if c is None else c for c in rec["bins"]["confidence"]]
        offset = (i - (len(series) - 1) / 2) * width * 0.4
        ax.bar(centres + offset, acc, width * 0.4, color=colour, alpha=0.75,
               label=f"{name}: ECE {rec['ece']:.3f}" + (f", T = {rec['temperature']:.2f}" if "temperature" in rec else ""))
        ax.plot(conf, acc, "o", color=colour, ms=3)
        hist.bar(centres + offset, rec["bins"]["count"], width * 0.4, color=colour, alpha=0.75)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy in the bin")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    hist.set(xlabel="confidence (top-class probability)", ylabel="samples")
    hist.grid(alpha=0.3)
    return save_figure_atomic(fig, path)


def _record(probs: np.ndarray, labels: np.ndarray, logits_nll: float, bins: int) -> dict[str, Any]:
    floor = ece_noise_floor(probs, bins)
    return {"ece": round(expected_calibration_error(probs, labels, bins), 5), "nll": round(logits_nll, 5),
            "accuracy": round(float((probs.argmax(1) == labels).mean()), 5),
            "ece_floor": {"mean": round(floor["mean"], 5), "p95": round(floor["p95"], 5), "draws": floor["draws"]},
            "bins": reliability_bins(probs, labels, bins)}


def calibration_report(preds: Mapping[str, Any], calibration: Calibration | None, out_dir: str | Path, *,
                       title: str = "", bins: int = ECE_BINS) -> tuple[dict[str, Any], str]:
    """ECE before / after per head of ``preds`` (head -> Prediction with logits), reliability PNGs, Markdown."""
    out = Path(out_dir)
    record: dict[str, Any] = {"bins": bins, "method": None if calibration is None else calibration.method, "heads": {}}
    rows = []
    for head, pred in preds.items():
        if pred.logits is None or not len(pred.y_true):
            continue
        z, y = np.asarray(pred.logits, np.float64), np.asarray(pred.y_true)
        before = _record(softmax(z), y, nll(z, y), bins)
        after = None
        if calibration is not None and head in calibration.heads:
            cal = calibration.head(head)
            after = _record(cal.probs(z), y, nll(z, y, cal.temperature, None if cal.bias is None else np.array(cal.bias)),
                            bins)
            after["temperature"] = cal.temperature
            after["prior_correction"] = cal.bias is not None
            after["fitted_on"] = dict(cal.fitted).get("split")
        record["heads"][head] = {"before": before, "after": after, "n": int(len(y))}
        name = HEAD_NAMES[head]
        plot_reliability(before, after, out / f"reliability_{head}.png",
                         title=f"{title} - {name} head (n = {len(y)})" if title else f"{name} head (n = {len(y)})")
        rows.append([name, str(len(y)), f"{before['ece']:.3f}", "-" if after is None else f"{after['ece']:.3f}",
                     f"{before['nll']:.3f}", "-" if after is None else f"{after['nll']:.3f}",
                     "-" if after is None else f"{after['ece_floor']['mean']:.3f} / {after['ece_floor']['p95']:.3f}",
                     "-" if after is None else f"{after['temperature']:.3f}",
                     "-" if after is None else str(after["fitted_on"]),
                     f"{100 * before['accuracy']:.2f}", "-" if after is None else f"{100 * after['accuracy']:.2f}"])
    lines = ["## Calibration", "",
             f"Expected calibration error over {bins} equal-width confidence bins, before (plain softmax) and after "
             "the checkpoint's calibration (fitted on the named validation split); NLL = mean negative "
             "log-likelihood; accuracy changes only with a prior correction. ECE floor: the ECE a perfectly "
             "calibrated head with the same confidences would show on this many samples (mean / 95th percentile of "
             "400 draws, each sample correct with probability equal to its confidence): an ECE below the 95th "
             "percentile is within finite-sample noise of perfect calibration.", ""]
    if calibration is None or calibration.is_identity:
        lines += ["The checkpoint records no calibration (run edge-eval --calibrate): only 'before' is measured.", ""]
    if rows:
        lines += [format_table(["head", "n", "ECE before", "ECE after", "NLL before", "NLL after",
                                "ECE floor after", "T",
                                "fitted on", "acc. before %", "acc. after %"], rows), ""]
        lines += [f"![{HEAD_NAMES[h]} reliability](reliability_{h}.png)" for h in record["heads"]]
    return record, "\n".join(lines) + "\n"
