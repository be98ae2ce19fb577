"""The on-disk feature store: fit_length, writing, reading, sharding, resuming, streaming and bad input."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.config import LFMIMConfig, ModalitySpec
from edge.errors import DataError, InputError
from edge.labels import CLASSES
from edge.train.store import FORMAT, FeatureStore, fit_length
from edge.train.store_writer import FeatureStoreWriter

SPECS = {"text": ModalitySpec(dim=6, length=5), "audio": ModalitySpec(dim=4, length=8),
         "vision": ModalitySpec(dim=3, length=4)}


def make_sample(rng: np.random.Generator, i: int) -> dict:
    """Features of varying length (shorter and longer than the specs) and labels with a missing one."""
    return {
        "sample_id": f"utt{i:03d}",
        "text": rng.standard_normal((3 + i % 4, 6)).astype(np.float32),
        "audio": rng.standard_normal((2 + 3 * i, 4)).astype(np.float32),
        "vision": rng.standard_normal((4, 3)).astype(np.float32),
        "labels": [i % 7, (i + 1) % 7, -1 if i % 3 == 0 else 2, 6 - i % 7],
    }


def write_store(root: Path, n: int, *, shard_size: int = 3, dtype: str = "float16", split: str = "train",
                seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    samples = [make_sample(rng, i) for i in range(n)]
    with FeatureStoreWriter(root, SPECS, shard_size=shard_size, dtype=dtype) as writer:
        for s in samples:
            writer.add(split, **s)
    return samples


# ---------------------------------------------------------------- fit_length

def test_fit_length_long_uniform_sampling_picks_linspace_indices():
    x = np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
    fixed, valid = fit_length(x, 4)
    # linspace(0, 9, 4) = 0, 3, 6, 9
    np.testing.assert_array_equal(fixed, x[[0, 3, 6, 9]])
    assert valid == 4
    y = np.arange(6 * 2, dtype=np.float32).reshape(6, 2)
    # linspace(0, 5, 4) = 0, 1.67, 3.33, 5 -> nearest rows 0, 2, 3, 5
    fixed, valid = fit_length(y, 4)
    np.testing.assert_array_equal(fixed, y[[0, 2, 3, 5]])
    assert valid == 4


def test_fit_length_short_zero_pads_at_the_end():
    x = np.ones((3, 2), np.float32)
    fixed, valid = fit_length(x, 5)
    assert fixed.shape == (5, 2) and valid == 3
    np.testing.assert_array_equal(fixed[:3], x)
    np.testing.assert_array_equal(fixed[3:], 0)


def test_fit_length_exact_and_crop():
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    fixed, valid = fit_length(x, 4)
    np.testing.assert_array_equal(fixed, x)
    assert valid == 4
    fixed, valid = fit_length(x, 2, mode="crop")
    np.testing.assert_array_equal(fixed, x[:2])
    assert valid == 2


def test_fit_length_bad_arguments():
    with pytest.raises(InputError, match="unknown fit mode 'middle'"):
        fit_length(np.zeros((3, 2)), 2, mode="middle")
    with pytest.raises(DataError, match=r"expected a \(T, D\) sequence, got an array of shape \(3,\)"):
        fit_length(np.zeros(3), 2)


# ---------------------------------------------------------------- round trip and layout

def test_round_trip_float16(tmp_path):
    samples = write_store(tmp_path / "s", 8)
    store = FeatureStore(tmp_path / "s")
    assert store.splits == ("train",) and store.classes == CLASSES and store.specs == SPECS
    view = store.split("train")
    assert len(view) == 8 and view.ids == [s["sample_id"] for s in samples]
    for i, s in enumerate(samples):
        got = view[i]
        assert got.id == s["sample_id"]
        for m in ("text", "audio", "vision"):
            want, valid = fit_length(s[m], SPECS[m].length)
            arr = getattr(got, m)
            assert arr.dtype == np.float32 and arr.shape == (SPECS[m].length, SPECS[m].dim)
            np.testing.assert_allclose(arr, want, rtol=1e-3, atol=1e-3)
            assert got.lengths[("text", "audio", "vision").index(m)] == valid
        np.testing.assert_array_equal(got.labels, s["labels"])
    np.testing.assert_array_equal(view.labels(), [s["labels"] for s in samples])
    assert view.labels().dtype == np.int64
    assert view.check() == 8


def test_round_trip_float32_is_exact(tmp_path):
    samples = write_store(tmp_path / "s", 4, dtype="float32")
    store = FeatureStore(tmp_path / "s")
    assert store.dtypes == {"text": "float32", "audio": "float32", "vision": "float32"}
    got = store.split("train")[3]
    np.testing.assert_array_equal(got.audio, fit_length(samples[3]["audio"], 8)[0])
    assert got.lengths.tolist() == [5, 8, 4]  # text 6 rows > 5 and audio 11 > 8 are sampled; vision exact


def test_layout_on_disk(tmp_path):
    write_store(tmp_path / "s", 4, shard_size=3)
    manifest = json.loads((tmp_path / "s" / "store.json").read_text())
    assert manifest["format"] == FORMAT
    assert manifest["modalities"]["audio"] == {"dim": 4, "length": 8, "dtype": "float16"}
    shard = tmp_path / "s" / "train" / "shard-00000"
    assert sorted(p.name for p in shard.iterdir()) == sorted(
        ["text.npy", "audio.npy", "vision.npy", "lengths.npy", "labels.npy", "ids.json"])
    assert np.load(shard / "text.npy").shape == (3, 5, 6) and np.load(shard / "text.npy").dtype == np.float16
    assert np.load(shard / "lengths.npy").dtype == np.int32 and np.load(shard / "labels.npy").shape == (3, 4)
    view = FeatureStore(tmp_path / "s").split("train")
    assert isinstance(view._shard(0)["text"], np.memmap)  # read lazily from disk
    clone = pickle.loads(pickle.dumps(view))  # for data-loader workers: no mapped arrays travel
    assert len(pickle.dumps(view)) < 2000 and clone[3].id == view[3].id


def test_config_as_specs_and_its_classes(tmp_path):
    config = LFMIMConfig(text=ModalitySpec(6, 5), audio=ModalitySpec(4, 8), vision=ModalitySpec(3, 4))
    with FeatureStoreWriter(tmp_path / "s", config) as writer:
        writer.add("test", "a", np.zeros((2, 6)), np.zeros((9, 4)), np.zeros((4, 3)), [0, 1, 2, 3])
    store = FeatureStore(tmp_path / "s")
    assert store.specs == SPECS and store.classes == config.classes


def test_shard_boundaries(tmp_path):
    samples = write_store(tmp_path / "s", 8, shard_size=3)
    manifest = json.loads((tmp_path / "s" / "store.json").read_text())
    assert manifest["splits"]["train"] == [{"shard": "shard-00000", "count": 3},
                                           {"shard": "shard-00001", "count": 3},
                                           {"shard": "shard-00002", "count": 2}]
    view = FeatureStore(tmp_path / "s").split("train")
    for i in (2, 3, 5, 6, 7, -1):
        assert view[i].id == samples[i]["sample_id"]
    with pytest.raises(IndexError, match="sample index 8 out of range"):
        view[8]


def test_several_splits_interleaved(tmp_path):
    rng = np.random.default_rng(1)
    with FeatureStoreWriter(tmp_path / "s", SPECS, shard_size=2) as writer:
        for i in range(5):
            writer.add("train" if i % 2 else "valid", **make_sample(rng, i))
        assert writer.counts() == {"train": 2, "valid": 3}
    store = FeatureStore(tmp_path / "s")
    assert set(store.splits) == {"train", "valid"}
    assert store.split("valid").ids == ["utt000", "utt002", "utt004"]


# ---------------------------------------------------------------- resume

def test_resume_after_interruption(tmp_path):
    root = tmp_path / "s"
    rng = np.random.default_rng(2)
    samples = [make_sample(rng, i) for i in range(10)]
    writer = FeatureStoreWriter(root, SPECS, shard_size=2)
    for s in samples[:5]:
        writer.add("train", **s)
    del writer  # interrupted: the fifth sample was still buffered and is lost
    # leftovers of a writer killed while flushing: a temp folder and a renamed but unlisted shard
    (root / "train" / ".tmp-shard-00002-x").mkdir()
    (root / "train" / "shard-00002").mkdir()
    assert len(FeatureStore(root).split("train")) == 4

    with pytest.raises(DataError, match=r"already exists here; pass resume=True"):
        FeatureStoreWriter(root, SPECS, shard_size=2)
    with FeatureStoreWriter(root, SPECS, shard_size=2, resume=True) as writer:
        assert [writer.has("train", s["sample_id"]) for s in samples[:5]] == [True] * 4 + [False]
        with pytest.raises(DataError, match="sample 'utt001' is already in split 'train'"):
            writer.add("train", **samples[1])
        for s in samples:
            if not writer.has("train", s["sample_id"]):
                writer.add("train", **s)
    assert not (root / "train" / ".tmp-shard-00002-x").exists()
    view = FeatureStore(root).split("train")
    assert sorted(view.ids) == [s["sample_id"] for s in samples] and len(view) == 10
    assert view.check() == 10


def test_reopen_with_other_settings_says_what_differs(tmp_path):
    write_store(tmp_path / "s", 2)
    other = dict(SPECS, audio=ModalitySpec(dim=4, length=9))
    with pytest.raises(DataError, match=r"audio \(length 8, dim 4, float16\) vs \(length 9, dim 4, float16\)"):
        FeatureStoreWriter(tmp_path / "s", other, resume=True)
    with pytest.raises(DataError, match=r"classes \['anger'.*\] vs \['a', 'b'\]"):
        FeatureStoreWriter(tmp_path / "s", SPECS, ("a", "b"), resume=True)
    with pytest.raises(DataError, match=r"text \(length 5, dim 6, float16\) vs \(length 5, dim 6, float32\)"):
        FeatureStoreWriter(tmp_path / "s", SPECS, dtype="float32", resume=True)


def test_writer_refuses_a_folder_that_is_not_a_store(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty and holds no store.json"):
        FeatureStoreWriter(tmp_path, SPECS)


# ---------------------------------------------------------------- streaming

def test_iter_batches_in_order_and_shuffled(tmp_path):
    samples = write_store(tmp_path / "s", 8, shard_size=3)
    view = FeatureStore(tmp_path / "s").split("train")
    names = [s["sample_id"] for s in samples]
    batches = list(view.iter_batches(3))
    assert [len(b["ids"]) for b in batches] == [3, 3, 2]
    assert [i for b in batches for i in b["ids"]] == names
    b = batches[0]
    assert b["text"].shape == (3, 5, 6) and b["audio"].dtype == np.float32
    assert b["lengths"].shape == (3, 3) and b["labels"].shape == (3, 4)
    np.testing.assert_array_equal(batches[1]["labels"], [s["labels"] for s in samples[3:6]])

    def order(seed):
        return [i for b in view.iter_batches(3, shuffle=True, seed=seed) for i in b["ids"]]

    assert sorted(order(0)) == sorted(names)  # every sample exactly once
    assert order(0) == order(0)
    assert order(0) != order(1) and order(1) != names
    assert len(list(view.iter_batches(3, drop_last=True))) == 2
    # a shuffled batch carries the right features for its ids
    shuffled = next(view.iter_batches(4, shuffle=True, seed=5))
    for row, sid in enumerate(shuffled["ids"]):
        i = names.index(sid)
        assert shuffled["index"][row] == i
        np.testing.assert_array_equal(shuffled["vision"][row], view[i].vision)
    with pytest.raises(InputError, match="batch_size must be at least 1"):
        next(view.iter_batches(0))


# ---------------------------------------------------------------- bad input to the writer

@pytest.fixture()
def writer(tmp_path):
    with FeatureStoreWriter(tmp_path / "s", SPECS) as w:
        yield w


def good(**changes):
    s = {"sample_id": "x1", "text": np.zeros((5, 6)), "audio": np.zeros((8, 4)), "vision": np.zeros((4, 3)),
         "labels": [0, 1, 2, 3]}
    s.update(changes)
    return s


@pytest.mark.parametrize("changes, message", [
    ({"audio": np.zeros((8, 5))}, r"sample 'x1': audio feature has shape \(8, 5\) \(float64\), expected \(T, 4\)"),
    ({"vision": np.zeros((4, 3, 1))}, r"sample 'x1': vision feature has shape \(4, 3, 1\)"),
    ({"text": np.zeros((0, 6))}, r"sample 'x1': text feature has shape \(0, 6\).*T >= 1"),
    ({"text": np.array([["a"] * 6])}, r"sample 'x1': text feature has shape \(1, 6\) \(<U1\)"),
    ({"audio": np.full((8, 4), np.nan)}, r"sample 'x1': audio feature contains NaN or infinite values"),
    ({"audio": np.full((8, 4), 1e6)}, r"exceed the float16 range .*dtype='float32'"),
    ({"labels": [0, 1, 2]}, r"labels must be 4 integer class indices .* got \[0, 1, 2\]"),
    ({"labels": [0, 1, 2, 7]}, r"labels must be 4 integer class indices \(t, a, v, m\) in 0..6 or -1"),
    ({"labels": [0, 1, -2, 3]}, r"labels must be 4 integer"),
    ({"labels": [0, 1, 2.5, 3]}, r"labels must be 4 integer"),
    ({"labels": "0123"}, r"labels must be 4 integer"),
    ({"sample_id": ""}, r"sample ids must be non-empty strings"),
])
def test_writer_rejects_bad_samples(writer, changes, message):
    with pytest.raises(DataError, match=message):
        writer.add("train", **good(**changes))
    assert writer.counts() == {}


def test_writer_accepts_numpy_labels_and_rejects_duplicates_and_bad_splits(writer):
    writer.add("train", **good(labels=np.array([6, -1, 0, 3])))
    with pytest.raises(DataError, match="sample 'x1' is already in split 'train'"):
        writer.add("train", **good())
    writer.add("valid", **good())  # ids are unique per split
    with pytest.raises(InputError, match="invalid split name '../x'"):
        writer.add("../x", **good(sample_id="x2"))
    writer.close()
    with pytest.raises(InputError, match="writer is closed"):
        writer.add("train", **good(sample_id="x3"))


def test_writer_bad_options(tmp_path):
    with pytest.raises(InputError, match="unknown feature dtype 'float64'"):
        FeatureStoreWriter(tmp_path / "s", SPECS, dtype="float64")
    with pytest.raises(InputError, match="shard_size must be at least 1"):
        FeatureStoreWriter(tmp_path / "s", SPECS, shard_size=0)
    with pytest.raises(InputError, match="need exactly the modalities text, audio, vision"):
        FeatureStoreWriter(tmp_path / "s", {"text": SPECS["text"]})


# ---------------------------------------------------------------- bad stores

def test_store_json_missing_corrupt_or_foreign(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "store.json")) + ": not found"):
        FeatureStore(tmp_path)
    (tmp_path / "store.json").write_text('{"format": "lfmim-edge-store/1", "classes"')
    with pytest.raises(DataError, match="store.json: not valid JSON"):
        FeatureStore(tmp_path)
    (tmp_path / "store.json").write_text('{"format": "something-else/2"}')
    with pytest.raises(DataError, match=r"not an lfmim-edge feature store \(format 'something-else/2'"):
        FeatureStore(tmp_path)
    (tmp_path / "store.json").write_text('{"format": "lfmim-edge-store/1", "classes": []}')
    with pytest.raises(DataError, match="store.json: the manifest is incomplete or malformed"):
        FeatureStore(tmp_path)


def test_unknown_and_empty_split(tmp_path):
    write_store(tmp_path / "s", 2)
    manifest = json.loads((tmp_path / "s" / "store.json").read_text())
    manifest["splits"]["test"] = []
    (tmp_path / "s" / "store.json").write_text(json.dumps(manifest))
    store = FeatureStore(tmp_path / "s")
    with pytest.raises(DataError, match="no split 'valid'; available splits: train, test"):
        store.split("valid")
    with pytest.raises(DataError, match="split 'test' is empty"):
        store.split("test")


def test_check_finds_truncated_and_wrong_shape_shards(tmp_path):
    write_store(tmp_path / "s", 8, shard_size=3)
    shard = tmp_path / "s" / "train" / "shard-00001"
    audio = shard / "audio.npy"
    audio.write_bytes(audio.read_bytes()[:100])
    view = FeatureStore(tmp_path / "s").split("train")
    with pytest.raises(DataError, match=re.escape(str(audio)) + ": not a readable .npy file"):
        view.check()
    with pytest.raises(DataError, match=re.escape(str(audio))):
        view[4]
    assert view[1].id == "utt001"  # other shards still read

    np.save(audio, np.zeros((3, 8, 5), np.float16))
    view = FeatureStore(tmp_path / "s").split("train")
    with pytest.raises(DataError, match=re.escape(str(audio)) + r": expected shape \(3, 8, 4\) float16, "
                                                              r"found \(3, 8, 5\) float16"):
        view.check()
    np.save(audio, np.zeros((3, 8, 4), np.float16))
    np.save(shard / "labels.npy", np.full((3, 4), 9, np.int64))
    with pytest.raises(DataError, match=r"labels.npy: labels must lie in -1..6"):
        view.check()
    np.save(shard / "labels.npy", np.zeros((3, 4), np.int64))
    (shard / "ids.json").write_text('["a", "b"]')
    with pytest.raises(DataError, match=r"ids.json: expected 3 ids \(as store.json says\), found 2"):
        view.check()
    (shard / "ids.json").write_text('["utt000", "b", "c"]')
    with pytest.raises(DataError, match=r"duplicate sample ids in split 'train': utt000"):
        view.check()
    np.save(shard / "text.npy", np.zeros((2, 5, 6), np.float16))
    with pytest.raises(DataError, match=r"text.npy: holds 2 samples, store.json says 3"):
        FeatureStore(tmp_path / "s").split("train")[3]
    np.save(shard / "text.npy", np.zeros((3, 5, 6), np.float16))
    (shard / "lengths.npy").unlink()
    with pytest.raises(DataError, match=r"lengths.npy: missing"):
        view.check()


def test_store_modules_do_not_import_torch():
    code = "import sys, edge.train.store, edge.train.cherma; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
