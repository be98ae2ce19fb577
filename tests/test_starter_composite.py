"""The starter LFMIM's composite set: real EmotionTalk label tuples, per-modality pools drawn by label."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import DataError
from edge.labels import NUM_CLASSES
from edge.starter.composite import (
    LabelRow, Pool, composite_splits, draw_samples, place_in_window, read_emotiontalk, vision_sequence,
)


def _pools(per_class: int = 3) -> dict[str, Pool]:
    labels = np.repeat(np.arange(NUM_CLASSES), per_class)
    return {m: Pool(np.random.default_rng(i).permutation(labels), m) for i, m in enumerate(("text", "audio", "vision"))}


def test_each_modality_is_drawn_with_its_own_label():
    rows = [LabelRow(f"u{i}", (i % 7, (i + 1) % 7, (i + 3) % 7, (i + 5) % 7)) for i in range(50)]
    pools = _pools()
    out = list(draw_samples(rows, pools, draws=2, seed=0))
    assert len(out) == 100 and len({sid for sid, *_ in out}) == 100
    for sid, t, a, v, labels in out:
        assert pools["text"].labels[t] == labels[0]
        assert pools["audio"].labels[a] == labels[1]
        assert pools["vision"].labels[v] == labels[2]
    again = list(draw_samples(rows, pools, draws=2, seed=0))
    assert again == out
    assert list(draw_samples(rows, pools, draws=2, seed=1)) != out


def test_a_class_missing_from_a_pool_is_named():
    pool = Pool(np.zeros(5, np.int64), "audio pool (test)")
    with pytest.raises(DataError, match="audio pool \\(test\\): no sample of class 3"):
        pool.draw(3, np.random.default_rng(0))


def test_vision_sequence_repeats_the_face_with_small_jitter():
    rng = np.random.default_rng(0)
    variants = rng.standard_normal((2, 256)).astype(np.float32)
    frames = vision_sequence(variants, 16, rng, noise=0.05)
    assert frames.shape == (16, 256)
    nearest = np.min([np.abs(frames - v).mean(axis=1) for v in variants], axis=0)
    assert np.all(nearest < 0.1 * np.abs(variants).mean())
    exact = vision_sequence(variants, 16, rng)
    assert all(any(np.array_equal(f, v) for v in variants) for f in exact)


def test_place_in_window_keeps_the_clip_and_pads_with_silence():
    clip = np.arange(1, 101, dtype=np.float32)
    centred = place_in_window(clip, 300, None)
    assert centred.shape == (300,) and np.array_equal(centred[100:200], clip) and not centred[:100].any()
    moved = place_in_window(clip, 300, np.random.default_rng(3))
    start = int(np.flatnonzero(moved)[0])
    assert np.array_equal(moved[start:start + 100], clip)
    long = place_in_window(np.arange(1000, dtype=np.float32), 300, None)
    assert np.array_equal(long, np.arange(350, 650, dtype=np.float32))


@pytest.mark.data
def test_emotiontalk_splits_are_disjoint_and_cover_the_table(shared_data):
    table = read_emotiontalk(shared_data / "emotiontalk" / "emotiontalk.csv")
    splits = composite_splits(table, seed=0)
    ids = {k: {r.id for r in v} for k, v in splits.items()}
    assert not ids["train"] & ids["valid"] and not ids["train"] & ids["test"] and not ids["valid"] & ids["test"]
    assert len(ids["train"]) + len(ids["valid"]) == len(table["train"])
    assert ids["test"] == {r.id for r in table["val"]}
    assert abs(len(ids["valid"]) / len(table["train"]) - 0.1) < 0.01
    labels = np.array([r.labels for r in splits["train"]])
    assert labels.shape[1] == 4 and labels.min() >= 0 and labels.max() < NUM_CLASSES
    # the tuples are real: the modalities disagree on a sizeable share of rows, as the paper's Incon says
    assert 0.2 < np.mean(labels[:, 1] != labels[:, 3]) < 0.5
