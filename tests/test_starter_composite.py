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


def test_own_prior_keep_turns_the_tuple_priors_into_the_target():
    from edge.starter.composite import own_prior_keep

    rng = np.random.default_rng(0)
    labels = rng.choice(NUM_CLASSES, size=20000, p=[0.05, 0.02, 0.03, 0.1, 0.6, 0.1, 0.1])  # mostly neutral
    target = np.array([1, 1, 1, 2, 1, 1, 1], float)
    keep = own_prior_keep(labels, target)
    assert keep.max() == pytest.approx(1.0) and keep[4] < 0.1
    kept = labels[rng.random(labels.size) < keep[labels]]
    got = np.bincount(kept, minlength=NUM_CLASSES) / kept.size
    assert np.allclose(got, target / target.sum(), atol=0.02)
    assert own_prior_keep(np.zeros(10, np.int64), np.ones(NUM_CLASSES))[1:].sum() == 0  # absent classes: 0
    with pytest.raises(DataError, match="non-negative"):
        own_prior_keep(labels, np.ones(3))


def test_masked_draws_keep_the_fused_label_and_draw_inputs_by_the_true_label():
    from edge.starter.composite import own_samples

    rows = [LabelRow(f"u{i}", (4, 4, i % 7, (i + 2) % 7)) for i in range(300)]
    pools = _pools()
    keep = {"text": np.full(NUM_CLASSES, 0.0), "audio": np.full(NUM_CLASSES, 1.0), "vision": np.full(NUM_CLASSES, 0.5)}
    out = list(draw_samples(rows, pools, draws=1, seed=0, keep=keep))
    assert all(labels[0] == -1 and labels[1] == 4 for *_, labels in out)
    kept_v = sum(labels[2] >= 0 for *_, labels in out)
    assert 100 < kept_v < 200
    for (sid, t, a, v, labels), row in zip(out, rows):
        assert labels[3] == row.labels[3] and pools["vision"].labels[v] == row.labels[2]
    only = list(own_samples(np.array([3, 5]), "audio"))
    assert only == [(0, (-1, 3, -1, -1)), (1, (-1, 5, -1, -1))]


def test_crema_rows_are_real_tuples_split_by_actor(shared_data):
    from edge.starter.composite import crema_rows

    rows = crema_rows(shared_data / "crema-d-votes" / "summaryTable.csv")
    assert sum(len(v) for v in rows.values()) == 7442
    actors = {s: {int(r.id.split(":")[1][:4]) for r in v} for s, v in rows.items()}
    assert actors["test"] == set(range(1001, 1010)) and actors["valid"] == set(range(1010, 1019))
    assert not actors["train"] & (actors["test"] | actors["valid"])
    fea = next(r for r in rows["test"] if r.id == "crema:1001_DFA_FEA_XX")
    assert fea.labels == (4, 2, 1, 2)  # text neutral, voice fear, face disgust, multimodal fear
