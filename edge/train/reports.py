"""Evaluation reports laid out like the paper's Tables 2 and 4, with one confusion-matrix figure per head.

``write_eval_report`` writes into ``out_dir``:

- ``report.json``: every metric of every head (see :func:`edge.train.metrics.classification_metrics`);
- ``report.md``: the F1 table (rows: the emotions, then "overall" = weighted F1, then "accuracy";
  columns: the heads present, named text / audio / vision / multimodal; percent with two decimals);
- ``confusion_<head>.png``: a row-normalised confusion heat map with the counts in the cells.

Every file is written to a temporary name in the same folder and moved into place with ``os.replace``.
matplotlib is imported lazily and drawn with the Agg canvas (no display, no global backend switch).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edge._lazy import lazy_import
from edge.config import HEAD_NAMES, HEADS
from edge.errors import DataError, InputError
from edge.fileio import write_text_atomic
from edge.train.metrics import classification_metrics

log = logging.getLogger("edge")

__all__ = [
    "format_table",
    "f1_table",
    "write_eval_report",
    "plot_confusion",
    "new_figure",
    "save_figure_atomic",
    "percent",
]


# --------------------------------------------------------------------------------------------------- text


def percent(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage string with ``digits`` decimals (``0.7054`` -> ``"70.54"``); None -> "-"."""
    if value is None:
        return "-"
    return f"{100.0 * float(value):.{digits}f}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, align: str | None = None) -> str:
    """A Markdown pipe table whose columns are padded, so it also reads well printed raw in a terminal.

    ``align`` has one letter per column, ``l`` or ``r``; the default is the first column left and the rest
    right.  Cells are converted with ``str``.
    """
    width = len(header)
    if width == 0:
        raise InputError("format_table needs at least one column")
    cells = [[str(c) for c in header]]
    for i, row in enumerate(rows):
        if len(row) != width:
            raise InputError(f"format_table: row {i} has {len(row)} cells, expected {width} (one per column)")
        cells.append([str(c) for c in row])
    if align is None:
        align = "l" + "r" * (width - 1)
    if len(align) != width or set(align) - {"l", "r"}:
        raise InputError(f"format_table: align must be {width} letters 'l' or 'r', got {align!r}")
    widths = [max(3, max(len(r[j]) for r in cells)) for j in range(width)]

    def line(row: Sequence[str]) -> str:
        padded = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":" if a == "r" else ":" + "-" * (w + 1)) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def f1_table(metrics: Mapping[str, Mapping[str, Any]], classes: Sequence[str]) -> str:
    """The paper's Table 2/4 layout: per-class F1, then "overall" (weighted F1) and "accuracy", in percent.

    ``metrics`` maps head ("t", "a", "v", "m") to the output of ``classification_metrics``; columns follow
    the order t, a, v, m whatever the order of the mapping.
    """
    heads = _ordered_heads(metrics)
    for h in heads:
        missing = [c for c in classes if c not in metrics[h].get("per_class", {})]
        if missing:
            raise InputError(f"head {h!r}: no metrics for class(es) {', '.join(missing)}; were they computed with these classes?")
    header = ["Emotion"] + [HEAD_NAMES[h] for h in heads]
    rows: list[list[str]] = []
    for name in classes:
        rows.append([name] + [percent(metrics[h]["per_class"][name]["f1"]) for h in heads])
    rows.append(["overall"] + [percent(metrics[h]["overall"]["weighted_f1"]) for h in heads])
    rows.append(["accuracy"] + [percent(metrics[h]["overall"]["accuracy"]) for h in heads])
    return format_table(header, rows)


def _ordered_heads(results: Mapping[str, Any]) -> list[str]:
    if not isinstance(results, Mapping) or not results:
        raise InputError(
            f"expected a non-empty mapping of head name ({', '.join(HEADS)}) to results, got {results!r}"
        )
    unknown = [h for h in results if h not in HEADS]
    if unknown:
        raise InputError(
            f"unknown head name(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(HEADS)}"
            " (text, audio, vision, multimodal)"
        )
    return [h for h in HEADS if h in results]


# ------------------------------------------------------------------------------------------------ figures


def new_figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib ``Figure`` attached to an Agg canvas (headless; pyplot and its global state untouched)."""
    lazy_import("matplotlib", purpose="report figures")
    figure = lazy_import("matplotlib.figure", purpose="report figures")
    agg = lazy_import("matplotlib.backends.backend_agg", purpose="report figures")
    fig = figure.Figure(figsize=figsize, dpi=110)
    agg.FigureCanvasAgg(fig)
    return fig


def save_figure_atomic(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` as a PNG at ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # os.open with mode 0o666 lets the umask decide the permissions (mkstemp would force 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", bbox_inches="tight")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def plot_confusion(metrics: Mapping[str, Any], path: str | Path, *, title: str = "") -> Path:
    """Draw the row-normalised confusion matrix of ``metrics`` (with counts) into the PNG ``path``."""
    classes = list(metrics["classes"])
    cm = np.asarray(metrics["confusion"], dtype=np.int64)
    support = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, support, out=np.zeros(cm.shape, dtype=np.float64), where=support > 0)
    k = len(classes)
    size = max(5.0, 0.85 * k + 2.5)
    fig = new_figure((size + 1.2, size))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, aspect="equal")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label("fraction of the true class (row)")
    for i in range(k):
        for j in range(k):
            text = f"{100 * frac[i, j]:.0f}%\n{cm[i, j]}" if cm[i, j] else "0"
            colour = "white" if frac[i, j] > 0.55 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(classes, rotation=40, ha="right")
    ax.set_yticklabels([f"{c} ({int(s)})" for c, s in zip(classes, support[:, 0])])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (support)")
    overall = metrics["overall"]
    subtitle = f"n = {overall['n']}, accuracy {percent(overall['accuracy'])}%, weighted F1 {percent(overall['weighted_f1'])}%"
    ax.set_title(f"{title}\n{subtitle}" if title else subtitle, fontsize=10)
    return save_figure_atomic(fig, path)


# ------------------------------------------------------------------------------------------------- report


def write_eval_report(
    results: Mapping[str, tuple[Any, Any]],
    classes: Sequence[str],
    out_dir: str | Path,
    *,
    title: str = "",
) -> str:
    """Write ``report.json``, ``report.md`` and ``confusion_<head>.png`` for every head into ``out_dir``.

    ``results`` maps a head name ("t", "a", "v", "m") to ``(y_true, y_pred)`` integer class indices into
    ``classes``.  Returns the Markdown text of ``report.md`` (for the CLI to print).
    """
    heads = _ordered_heads(results)
    metrics: dict[str, dict[str, Any]] = {}
    for head in heads:
        pair = results[head]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InputError(f"head {head!r}: expected a pair (y_true, y_pred), got {type(pair).__name__}")
        try:
            metrics[head] = classification_metrics(pair[0], pair[1], classes)
        except DataError as exc:
            raise DataError(f"head {head!r} ({HEAD_NAMES[head]}): {exc}") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    payload = {
        "title": title,
        "classes": list(metrics[heads[0]]["classes"]),
        "heads": {h: {"name": HEAD_NAMES[h], **metrics[h]} for h in heads},
    }
    write_text_atomic(out / "report.json", json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n")

    sizes = ", ".join(f"{HEAD_NAMES[h]} {metrics[h]['overall']['n']}" for h in heads)
    lines = [f"# {title}" if title else "# Evaluation report", ""]
    lines.append(
        "F1 score per emotion in percent; \"overall\" is the support-weighted F1 (the paper's overall score), "
        f"\"accuracy\" the fraction of samples classified correctly. Samples: {sizes}."
    )
    lines += ["", f1_table(metrics, payload["classes"]), ""]
    lines.append("Macro F1 (unweighted mean over the classes present): " + ", ".join(
        f"{HEAD_NAMES[h]} {percent(metrics[h]['overall']['macro_f1'])}" for h in heads
    ) + ".")
    lines.append("")
    for h in heads:
        lines.append(f"![{HEAD_NAMES[h]} confusion matrix](confusion_{h}.png)")
    markdown = "\n".join(lines) + "\n"
    write_text_atomic(out / "report.md", markdown)

    for h in heads:
        head_title = f"{title} - {HEAD_NAMES[h]} head" if title else f"{HEAD_NAMES[h]} head"
        plot_confusion(metrics[h], out / f"confusion_{h}.png", title=head_title)
    log.info("wrote evaluation report for head(s) %s to %s", ", ".join(heads), out)
    return markdown
