"""Label-inconsistency statistics of section 3.2 of the paper (its Figure 1).

With labels ``y_t, y_a, y_v, y_m`` per sample (text, audio, vision, multi-modal):

- ``Incon(u1, u2) = (1/N) * sum_n 1[y_u1 != y_u2]`` for the six pairs of t, a, v, m (Figure 1b);
- ``Incon(u, m; y) = #{n: y_m = y and y_u != y} / #{n: y_m = y}`` for u in t, a, v and every class y
  (Figure 1c).  A class that no sample has as its multi-modal label has no defined value: it is reported as
  ``None`` and listed in ``skipped_classes``, never as NaN;
- the label distribution of every modality (Figure 1a).
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edge.config import HEAD_NAMES, HEADS
from edge.errors import DataError, InputError
from edge.labels import CLASSES
from edge.fileio import write_text_atomic
from edge.train.reports import format_table, new_figure, save_figure_atomic

log = logging.getLogger("edge")

__all__ = [
    "inconsistency_stats",
    "format_inconsistency",
    "plot_inconsistency",
    "write_inconsistency_report",
    "FIGURES",
]

#: File names of the three figures, as in the paper's Figure 1 (a), (b), (c).
FIGURES: dict[str, str] = {
    "a": "figure1a_label_distribution.png",
    "b": "figure1b_pair_inconsistency.png",
    "c": "figure1c_inconsistency_per_class.png",
}
#: Colours of the paper's Figure 2: text green, audio orange, vision pink, multi-modal purple.
COLOURS: dict[str, str] = {"t": "#4daf4a", "a": "#ff7f00", "v": "#e7298a", "m": "#7b3294"}
UNIMODAL: tuple[str, ...] = ("t", "a", "v")


def _validate(labels: Any, classes: Sequence[str]) -> np.ndarray:
    names = list(classes) if not isinstance(classes, str) else []
    if not names or len(set(names)) != len(names):
        raise InputError(f"classes must be a non-empty sequence of unique class names, got {classes!r}")
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.shape[1] != len(HEADS):
        raise DataError(
            f"labels: expected an (N, {len(HEADS)}) array with columns {', '.join(HEADS)}"
            f" (text, audio, vision, multimodal), got shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise DataError("labels: expected at least one sample, got none")
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"labels: expected integer class indices 0..{len(names) - 1}, got values of type {arr.dtype}")
    bad = (arr < 0) | (arr >= len(names))
    if bad.any():
        row, col = (int(x) for x in np.argwhere(bad)[0])
        raise DataError(
            f"labels: expected class indices in 0..{len(names) - 1}, got {int(arr[row, col])}"
            f" at row {row}, column {HEADS[col]} ({int(bad.sum())} value(s) out of range)"
        )
    return arr.astype(np.int64, copy=False)


def inconsistency_stats(labels: Any, classes: Sequence[str] = CLASSES) -> dict[str, Any]:
    """Section 3.2 statistics of an ``(N, 4)`` array of class indices in column order t, a, v, m.

    Returns a JSON-ready dictionary::

        {"n", "classes", "heads",
         "all_agree":  fraction of samples whose four labels are identical,
         "pairs":      {"t-a": Incon(t, a), ...}            # the six pairs
         "matrix":     4 x 4 list, matrix[i][j] = Incon(heads[i], heads[j]), zero diagonal,
         "per_class":  {"t"|"a"|"v": {class: Incon(u, m; class) or None}},
         "support_m":  {class: number of samples with that multi-modal label},
         "skipped_classes": [classes with no multi-modal support, whose per-class values are None],
         "distribution": {head: {class: count}}}
    """
    arr = _validate(labels, classes)
    names = list(classes)
    n, k = arr.shape[0], len(names)
    matrix = np.zeros((len(HEADS), len(HEADS)), dtype=np.float64)
    for i, j in itertools.combinations(range(len(HEADS)), 2):
        matrix[i, j] = matrix[j, i] = float(np.mean(arr[:, i] != arr[:, j]))
    pairs = {f"{HEADS[i]}-{HEADS[j]}": float(matrix[i, j]) for i, j in itertools.combinations(range(len(HEADS)), 2)}

    m_col = HEADS.index("m")
    y_m = arr[:, m_col]
    support_m = np.bincount(y_m, minlength=k)
    per_class: dict[str, dict[str, float | None]] = {}
    for u in UNIMODAL:
        y_u = arr[:, HEADS.index(u)]
        differ = np.bincount(y_m[y_u != y_m], minlength=k)
        per_class[u] = {
            name: (float(differ[c] / support_m[c]) if support_m[c] else None) for c, name in enumerate(names)
        }
    skipped = [name for c, name in enumerate(names) if support_m[c] == 0]
    if skipped:
        log.warning(
            "no sample has multi-modal label %s; Incon(u, m; y) is undefined for it and reported as None",
            ", ".join(skipped),
        )
    distribution = {
        h: {name: int(cnt) for name, cnt in zip(names, np.bincount(arr[:, col], minlength=k))}
        for col, h in enumerate(HEADS)
    }
    return {
        "n": int(n),
        "classes": names,
        "heads": list(HEADS),
        "all_agree": float(np.mean(np.all(arr == arr[:, :1], axis=1))),
        "pairs": pairs,
        "matrix": matrix.tolist(),
        "per_class": per_class,
        "support_m": {name: int(s) for name, s in zip(names, support_m)},
        "skipped_classes": skipped,
        "distribution": distribution,
    }


# ----------------------------------------------------------------------------------------------- text


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Space-aligned plain-text table: first column left, the others right."""
    cells = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    out = []
    for r in cells:
        out.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))).rstrip())
    return "\n".join(out)


def _pair_rows(stats: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    heads = stats["heads"]
    header = [""] + [HEAD_NAMES[h] for h in heads]
    rows = [[HEAD_NAMES[h]] + [_fmt(v) for v in stats["matrix"][i]] for i, h in enumerate(heads)]
    return header, rows


def _class_rows(stats: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["class", "n(m=y)"] + [HEAD_NAMES[u] for u in UNIMODAL]
    rows = [
        [name, str(stats["support_m"][name])] + [_fmt(stats["per_class"][u][name]) for u in UNIMODAL]
        for name in stats["classes"]
    ]
    return header, rows


def _distribution_rows(stats: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    heads = stats["heads"]
    header = ["class"] + [HEAD_NAMES[h] for h in heads]
    rows = [[name] + [str(stats["distribution"][h][name]) for h in heads] for name in stats["classes"]]
    return header, rows


def format_inconsistency(stats: Mapping[str, Any]) -> str:
    """Plain-text tables of ``stats`` for a terminal: the pair matrix, the per-class table, the distribution."""
    lines = [
        f"N = {stats['n']} samples; all four labels identical for {100 * stats['all_agree']:.2f}% of them",
        "",
        "Incon(u1, u2): fraction of samples whose u1 and u2 labels differ",
        _text_table(*_pair_rows(stats)),
        "",
        "Incon(u, m; y): of the samples with multi-modal label y, the fraction whose u label differs",
        _text_table(*_class_rows(stats)),
    ]
    if stats["skipped_classes"]:
        lines.append(
            f"'-': no sample has multi-modal label {', '.join(stats['skipped_classes'])}, so Incon(u, m; y)"
            " is undefined there"
        )
    lines += ["", "Label distribution (samples per class and modality)", _text_table(*_distribution_rows(stats))]
    return "\n".join(lines) + "\n"


def _markdown(stats: Mapping[str, Any], title: str) -> str:
    lines = [f"# {title}" if title else "# Label inconsistency", ""]
    lines.append(
        f"N = {stats['n']} samples; all four labels (text, audio, vision, multimodal) are identical for "
        f"{100 * stats['all_agree']:.2f}% of them."
    )
    lines += ["", "## Incon(u1, u2): fraction of samples whose two labels differ", ""]
    header, rows = _pair_rows(stats)
    lines += [format_table(header, rows), ""]
    lines += ["## Incon(u, m; y): of the samples with multi-modal label y, the fraction whose u label differs", ""]
    lines += [format_table(*_class_rows(stats)), ""]
    if stats["skipped_classes"]:
        lines += [f"'-': no sample has multi-modal label {', '.join(stats['skipped_classes'])}; undefined.", ""]
    lines += ["## Label distribution (samples per class)", "", format_table(*_distribution_rows(stats)), ""]
    lines += [f"![Figure 1{key}]({name})" for key, name in FIGURES.items()]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- figures


def _grouped_bars(ax: Any, classes: Sequence[str], series: Mapping[str, Sequence[float | None]]) -> None:
    k, s = len(classes), len(series)
    width = 0.8 / s
    x = np.arange(k)
    for i, (head, values) in enumerate(series.items()):
        heights = [0.0 if v is None else float(v) for v in values]
        ax.bar(x - 0.4 + width * (i + 0.5), heights, width, label=HEAD_NAMES[head], color=COLOURS[head])
    ax.set_xticks(x)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(frameon=False, ncol=s, loc="upper center", bbox_to_anchor=(0.5, -0.16))


def plot_inconsistency(stats: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write the three panels of the paper's Figure 1 as PNGs into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    classes = list(stats["classes"])
    heads = list(stats["heads"])
    written = []

    fig = new_figure((9.0, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    _grouped_bars(ax, classes, {h: [stats["distribution"][h][c] for c in classes] for h in heads})
    ax.set_xticklabels(classes, rotation=20)
    ax.set_ylabel("number of samples")
    ax.set_title(f"(a) Label distribution per modality (N = {stats['n']})")
    written.append(save_figure_atomic(fig, out / FIGURES["a"]))

    fig = new_figure((6.0, 5.2))
    ax = fig.add_subplot(1, 1, 1)
    matrix = np.asarray(stats["matrix"], dtype=np.float64)
    image = ax.imshow(matrix, cmap="Reds", vmin=0.0, vmax=max(0.05, float(matrix.max())))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).set_label("Incon(u1, u2)")
    for i in range(len(heads)):
        for j in range(len(heads)):
            colour = "white" if matrix[i, j] > 0.6 * matrix.max() else "black"
            ax.text(j, i, f"{matrix[i, j]:.3f}", ha="center", va="center", fontsize=10, color=colour)
    names = [HEAD_NAMES[h] for h in heads]
    ax.set_xticks(range(len(heads)))
    ax.set_yticks(range(len(heads)))
    ax.set_xticklabels(names)
    ax.set_yticklabels(names)
    ax.set_title(f"(b) Overall modality inconsistency (N = {stats['n']})")
    written.append(save_figure_atomic(fig, out / FIGURES["b"]))

    fig = new_figure((9.0, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    _grouped_bars(ax, classes, {u: [stats["per_class"][u][c] for c in classes] for u in UNIMODAL})
    ax.set_xticklabels([f"{c}\n(n={stats['support_m'][c]})" for c in classes])
    for i, c in enumerate(classes):
        if c in stats["skipped_classes"]:
            ax.text(i, 0.02, "no samples", ha="center", va="bottom", rotation=90, fontsize=8, color="grey")
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("Incon(u, m; y)")
    ax.set_title("(c) Inconsistency of each uni-modal label with the multi-modal label y")
    written.append(save_figure_atomic(fig, out / FIGURES["c"]))
    return written


# --------------------------------------------------------------------------------------------- report


def write_inconsistency_report(stats: Mapping[str, Any], out_dir: str | Path, *, title: str = "") -> str:
    """Write ``inconsistency.json``, ``inconsistency.md`` and the three Figure-1 PNGs; return the Markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"title": title, **stats}
    write_text_atomic(out / "inconsistency.json", json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    markdown = _markdown(stats, title)
    write_text_atomic(out / "inconsistency.md", markdown)
    plot_inconsistency(stats, out)
    log.info("wrote label-inconsistency report to %s", out)
    return markdown
