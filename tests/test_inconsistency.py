"""Section 3.2 label-inconsistency statistics on a hand-made array and on the real EmotionTalk table."""

from __future__ import annotations

import csv
import itertools
import json
import math

import numpy as np
import pytest

from edge.errors import DataError, InputError
from edge.labels import CLASSES
from edge.train.inconsistency import (
    FIGURES,
    format_inconsistency,
    inconsistency_stats,
    plot_inconsistency,
    write_inconsistency_report,
)
from edge.train.tables import read_label_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["x", "y", "z"]
# Columns t, a, v, m.  Class z never occurs as a multi-modal label.
LABELS = np.array(
    [
        [0, 0, 0, 0],
        [1, 0, 0, 0],
        [1, 1, 2, 1],
        [2, 1, 1, 1],
        [0, 0, 0, 1],
        [2, 2, 2, 0],
    ]
)


def test_pairwise_by_hand():
    s = inconsistency_stats(LABELS, NAMES)
    assert s["n"] == 6
    # Rows that differ, counted by hand: t-a rows 1,3; t-v 1,2,3; t-m 1,3,4,5; a-v 2; a-m 4,5; v-m 2,4,5.
    expected = {"t-a": 2 / 6, "t-v": 3 / 6, "t-m": 4 / 6, "a-v": 1 / 6, "a-m": 2 / 6, "v-m": 3 / 6}
    assert s["pairs"] == pytest.approx(expected)
    assert list(s["pairs"]) == ["t-a", "t-v", "t-m", "a-v", "a-m", "v-m"]
    m = np.array(s["matrix"])
    assert m.shape == (4, 4)
    np.testing.assert_allclose(np.diag(m), 0.0)
    np.testing.assert_allclose(m, m.T)
    assert m[0, 3] == pytest.approx(4 / 6) and m[1, 2] == pytest.approx(1 / 6)
    assert s["all_agree"] == pytest.approx(1 / 6)


def test_per_class_by_hand():
    s = inconsistency_stats(LABELS, NAMES)
    # y_m = x on rows 0,1,5; y_m = y on rows 2,3,4; no row has y_m = z.
    assert s["support_m"] == {"x": 3, "y": 3, "z": 0}
    assert s["per_class"]["t"]["x"] == pytest.approx(2 / 3)  # rows 1, 5 differ
    assert s["per_class"]["t"]["y"] == pytest.approx(2 / 3)  # rows 3, 4
    assert s["per_class"]["a"]["x"] == pytest.approx(1 / 3)  # row 5
    assert s["per_class"]["a"]["y"] == pytest.approx(1 / 3)  # row 4
    assert s["per_class"]["v"]["x"] == pytest.approx(1 / 3)  # row 5
    assert s["per_class"]["v"]["y"] == pytest.approx(2 / 3)  # rows 2, 4
    assert all(s["per_class"][u]["z"] is None for u in "tav")
    assert s["skipped_classes"] == ["z"]
    assert set(s["per_class"]) == {"t", "a", "v"}


def test_distribution_by_hand():
    s = inconsistency_stats(LABELS, NAMES)
    assert s["distribution"] == {
        "t": {"x": 2, "y": 2, "z": 2},
        "a": {"x": 3, "y": 2, "z": 1},
        "v": {"x": 3, "y": 1, "z": 2},
        "m": {"x": 3, "y": 3, "z": 0},
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_definition_with_loops(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, size=(int(rng.integers(1, 80)), 4))
    s = inconsistency_stats(labels, CLASSES)
    heads = "tavm"
    for i, j in itertools.combinations(range(4), 2):
        diff = sum(1 for row in labels.tolist() if row[i] != row[j])
        assert s["pairs"][f"{heads[i]}-{heads[j]}"] == pytest.approx(diff / len(labels))
    for u_col, u in enumerate("tav"):
        for c, name in enumerate(CLASSES):
            with_y = [row for row in labels.tolist() if row[3] == c]
            if not with_y:
                assert s["per_class"][u][name] is None
            else:
                wrong = sum(1 for row in with_y if row[u_col] != c)
                assert s["per_class"][u][name] == pytest.approx(wrong / len(with_y))


def test_format_text():
    s = inconsistency_stats(LABELS, NAMES)
    text = format_inconsistency(s)
    assert "N = 6 samples" in text
    lines = text.splitlines()
    row_t = next(line for line in lines if line.startswith("text ") and "0.000" in line)
    assert row_t.split()[1:] == ["0.000", "0.333", "0.500", "0.667"]
    row_y = next(line for line in lines if line.startswith("y ") and "0.667" in line)
    assert row_y.split() == ["y", "3", "0.667", "0.333", "0.667"]
    row_z = next(line for line in lines if line.startswith("z ") and "-" in line)
    assert row_z.split() == ["z", "0", "-", "-", "-"]
    assert "no sample has multi-modal label z" in text
    assert "nan" not in text.lower()


def test_report_files(tmp_path):
    pytest.importorskip("matplotlib", reason="report figures need matplotlib (pip install 'lfmim-edge[train]')")
    s = inconsistency_stats(LABELS, NAMES)
    markdown = write_inconsistency_report(s, tmp_path / "incon", title="Toy")
    out = tmp_path / "incon"
    assert (out / "inconsistency.md").read_text(encoding="utf-8") == markdown
    assert markdown.startswith("# Toy")
    assert "| text       | 0.000 | 0.333 |  0.500 |      0.667 |" in markdown
    data = json.loads((out / "inconsistency.json").read_text(encoding="utf-8"))
    assert data["per_class"]["t"]["z"] is None and data["n"] == 6
    assert data["pairs"]["t-m"] == pytest.approx(4 / 6)
    for name in FIGURES.values():
        blob = (out / name).read_bytes()
        assert blob[:8] == PNG_MAGIC and len(blob) > 1000
    assert sorted(p.name for p in out.iterdir()) == sorted(["inconsistency.json", "inconsistency.md", *FIGURES.values()])


def test_plot_returns_paths(tmp_path):
    pytest.importorskip("matplotlib", reason="report figures need matplotlib (pip install 'lfmim-edge[train]')")
    paths = plot_inconsistency(inconsistency_stats(LABELS, NAMES), tmp_path)
    assert [p.name for p in paths] == [FIGURES["a"], FIGURES["b"], FIGURES["c"]]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in paths)


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.zeros((5, 3), dtype=int), r"expected an \(N, 4\) array with columns t, a, v, m.*got shape \(5, 3\)"),
        (np.zeros(4, dtype=int), r"got shape \(4,\)"),
        (np.zeros((0, 4), dtype=int), "expected at least one sample"),
        (np.zeros((2, 4)), "expected integer class indices 0..2, got values of type float64"),
        (np.array([[0, 0, 0, 0], [0, 3, 0, 0]]), r"expected class indices in 0\.\.2, got 3 at row 1, column a"),
    ],
)
def test_invalid_labels(labels, match):
    with pytest.raises(DataError, match=match):
        inconsistency_stats(labels, NAMES)


def test_invalid_classes():
    with pytest.raises(InputError, match="unique class names"):
        inconsistency_stats(LABELS, ["x", "x", "z"])


@pytest.mark.data
def test_real_emotiontalk(shared_data, tmp_path):
    pytest.importorskip("matplotlib", reason="the report's figures need matplotlib (pip install 'lfmim-edge[train]')")
    path = shared_data / "emotiontalk" / "emotiontalk.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    table = read_label_table(path)
    assert len(table) == 17321
    stats = inconsistency_stats(table.labels, CLASSES)
    text = format_inconsistency(stats)
    print("\n" + text)
    assert stats["n"] == 17321
    assert len(stats["pairs"]) == 6
    for pair, value in stats["pairs"].items():
        assert 0.0 < value < 1.0, pair
        assert f"{value:.3f}" in text, f"{pair} = {value} not printed"
    assert not stats["skipped_classes"]
    assert all(v is not None and not math.isnan(v) for u in "tav" for v in stats["per_class"][u].values())

    # Independent check of two definitions straight from the CSV strings.
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    t_m = sum(r["label_text"].strip() != r["label_multimodal"].strip() for r in rows) / len(rows)
    assert stats["pairs"]["t-m"] == pytest.approx(t_m)
    anger = [r for r in rows if r["label_multimodal"].strip() == "anger"]
    audio_off = sum(r["label_audio"].strip() != "anger" for r in anger) / len(anger)
    assert stats["per_class"]["a"]["anger"] == pytest.approx(audio_off)

    for split in ("train", "val"):
        part = read_label_table(path, split=split)
        print(f"\nsplit {split}:\n" + format_inconsistency(inconsistency_stats(part.labels, CLASSES)))
        assert 0 < len(part) < len(table)
    write_inconsistency_report(stats, tmp_path, title="EmotionTalk")
    assert all((tmp_path / name).read_bytes()[:8] == PNG_MAGIC for name in FIGURES.values())
