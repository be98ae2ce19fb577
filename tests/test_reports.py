"""Evaluation reports: JSON, the paper-style Markdown table, confusion PNGs, errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from edge.errors import DataError, InputError
from edge.labels import CLASSES
from edge.train.reports import f1_table, format_table, percent, write_eval_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Same hand-computed ten-sample case as test_metrics (3 classes used of 7).
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
Y_PRED = np.array([0, 0, 1, 4, 1, 1, 0, 2, 1, 0])


def png_size(path: Path) -> tuple[int, int]:
    """Check the PNG signature and IHDR chunk; return (width, height)."""
    data = path.read_bytes()
    assert len(data) > 100, f"{path} is suspiciously small"
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _row(markdown: str, first: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first:
            return cells[1:]
    raise AssertionError(f"no row {first!r} in:\n{markdown}")


def test_percent():
    assert percent(0.70544) == "70.54"
    assert percent(1) == "100.00"
    assert percent(None) == "-"


def test_format_table_alignment_and_errors():
    text = format_table(["name", "x"], [["a", 1], ["bbbbbb", 22]])
    lines = text.splitlines()
    assert lines[0] == "| name   |   x |"
    assert lines[1] == "|:-------|----:|"
    assert lines[3] == "| bbbbbb |  22 |"
    assert len({len(line) for line in lines}) == 1  # every line equally wide
    with pytest.raises(InputError, match="row 0 has 1 cells, expected 2"):
        format_table(["a", "b"], [["only one"]])
    with pytest.raises(InputError, match="align must be 2 letters"):
        format_table(["a", "b"], [], align="lc")


def test_write_eval_report(tmp_path):
    pytest.importorskip("matplotlib", reason="report figures need matplotlib (pip install 'lfmim-edge[train]')")
    out = tmp_path / "eval"
    results = {
        "m": (Y_TRUE, Y_PRED),  # given out of order on purpose: columns must still be t, a, v, m
        "t": (Y_TRUE, Y_TRUE),
        "a": (Y_TRUE.tolist(), np.zeros(10, dtype=np.int64)),
    }
    markdown = write_eval_report(results, CLASSES, out, title="Unit test")
    assert (out / "report.md").read_text(encoding="utf-8") == markdown
    assert markdown.startswith("# Unit test")

    header = _row(markdown, "Emotion")
    assert header == ["text", "audio", "multimodal"]  # no vision column: that head was not given
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows] == ["Emotion", *CLASSES, "overall", "accuracy"]

    # Multimodal column, by hand: anger (c0) F1 1/2, disgust (c1) 4/7, fear (c2) 2/3, weighted 53/105, acc 1/2.
    assert _row(markdown, "anger")[2] == "50.00"
    assert _row(markdown, "disgust")[2] == "57.14"
    assert _row(markdown, "fear")[2] == "66.67"
    assert _row(markdown, "happiness")[2] == "0.00"
    assert _row(markdown, "overall")[2] == "50.48"
    assert _row(markdown, "accuracy")[2] == "50.00"
    # Text head is perfect; audio predicts "anger" always: anger F1 = 2*(4/10*1)/(4/10+1) = 4/7.
    assert _row(markdown, "overall")[0] == "100.00"
    assert _row(markdown, "anger")[1] == "57.14"
    assert _row(markdown, "accuracy")[1] == "40.00"

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["title"] == "Unit test"
    assert report["classes"] == list(CLASSES)
    assert list(report["heads"]) == ["t", "a", "m"]
    assert report["heads"]["m"]["name"] == "multimodal"
    assert report["heads"]["m"]["overall"]["weighted_f1"] == pytest.approx(53 / 105)
    assert report["heads"]["a"]["per_class"]["anger"]["precision"] == pytest.approx(0.4)
    assert report["heads"]["m"]["confusion"][0][:5] == [2, 1, 0, 0, 1]

    for head in ("t", "a", "m"):
        width, height = png_size(out / f"confusion_{head}.png")
        assert width >= 400 and height >= 400
    assert not (out / "confusion_v.png").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.json", "report.md", "confusion_t.png", "confusion_a.png", "confusion_m.png"]
    ), "temporary files were left behind"


def test_report_overwrites_atomically(tmp_path):
    pytest.importorskip("matplotlib", reason="report figures need matplotlib (pip install 'lfmim-edge[train]')")
    write_eval_report({"t": ([0, 1], [0, 1])}, CLASSES, tmp_path)
    first = json.loads((tmp_path / "report.json").read_text())
    write_eval_report({"t": ([0, 1], [1, 0])}, CLASSES, tmp_path)
    second = json.loads((tmp_path / "report.json").read_text())
    assert first["heads"]["t"]["overall"]["accuracy"] == 1.0
    assert second["heads"]["t"]["overall"]["accuracy"] == 0.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_f1_table_directly():
    from edge.train.metrics import classification_metrics

    metrics = {"v": classification_metrics([0, 1], [0, 0], ["x", "y"])}
    table = f1_table(metrics, ["x", "y"])
    assert _row(table, "Emotion") == ["vision"]
    assert _row(table, "x") == ["66.67"]  # P 1/2, R 1
    assert _row(table, "y") == ["0.00"]
    with pytest.raises(InputError, match="no metrics for class"):
        f1_table(metrics, ["x", "z"])


def test_report_errors(tmp_path):
    with pytest.raises(InputError, match="non-empty mapping of head name"):
        write_eval_report({}, CLASSES, tmp_path)
    with pytest.raises(InputError, match=r"unknown head name\(s\) 'text'; expected some of t, a, v, m"):
        write_eval_report({"text": ([0], [0])}, CLASSES, tmp_path)
    with pytest.raises(DataError, match=r"head 'a' \(audio\): y_true and y_pred must have the same length"):
        write_eval_report({"t": ([0], [0]), "a": ([0, 1], [0])}, CLASSES, tmp_path)
    with pytest.raises(InputError, match=r"head 'v': expected a pair \(y_true, y_pred\)"):
        write_eval_report({"v": np.zeros(3, dtype=int)}, CLASSES, tmp_path)
    assert not any(tmp_path.iterdir()), "nothing may be written when the input is invalid"
