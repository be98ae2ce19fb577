"""The CHERMA feature-release reader: fixture, parsing, label mapping, conversion and every bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.config import PRESETS
from edge.errors import DataError
from edge.train.cherma import convert_cherma, make_cherma_fixture, read_cherma
from edge.train.store import FeatureStore, fit_length

CONFIG = PRESETS["tiny"]  # text (16, 32), audio (20, 24), vision (12, 16)
#: CHERMA's names in the canonical order, written out by hand.
BY_HAND = {"愤怒": 0, "厌恶": 1, "恐惧": 2, "高兴": 3, "平静": 4, "悲伤": 5, "惊奇": 6}


@pytest.fixture()
def cherma(tmp_path) -> Path:
    return make_cherma_fixture(tmp_path / "cherma", 4, CONFIG, seed=3)


def write_split(root: Path, name: str, entries) -> None:
    (root / f"{name}.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")


def test_fixture_is_faithful(cherma):
    assert sorted(p.name for p in cherma.glob("*.json")) == ["test.json", "train.json", "valid.json"]
    entry = json.loads((cherma / "train.json").read_text(encoding="utf-8"))[0]
    assert set(entry) >= {"audio_file", "video_file", "txt_label", "audio_label", "visual_label", "video_label"}
    assert all(entry[k] in BY_HAND for k in ("txt_label", "audio_label", "visual_label", "video_label"))
    stem = entry["audio_file"][:-4]
    assert np.load(cherma / "text" / "train" / f"{stem}.npy").shape == (16, 32)
    assert np.load(cherma / "visual" / "train" / f"{stem}.mp4.npy").shape == (12, 16)
    lengths = [np.load(p).shape[0] for p in sorted((cherma / "audio" / "train").glob("*.npy"))]
    assert min(lengths) < 20 < max(lengths)  # variable length, both sides of the config's audio length


def test_read_cherma_maps_labels(cherma):
    raw = json.loads((cherma / "valid.json").read_text(encoding="utf-8"))
    entries = read_cherma(cherma, "valid")
    assert [e.id for e in entries] == [r["audio_file"].removesuffix(".wav") for r in raw]
    for e, r in zip(entries, raw):
        assert e.labels == (r["txt_label"], r["audio_label"], r["visual_label"], r["video_label"])
        assert e.targets == tuple(BY_HAND[r[k]] for k in ("txt_label", "audio_label", "visual_label", "video_label"))


def test_hand_written_entries_list_and_dict(cherma):
    shutil.copy(cherma / "train.json", cherma / "backup.json")
    stem = "cherma_train_0000"
    entry = {"audio_file": f"{stem}.wav", "video_file": f"{stem}.mp4", "txt_label": "愤怒",
             "audio_label": "平静", "visual_label": "惊奇", "video_label": "高兴"}
    write_split(cherma, "train", [entry])
    (e,) = read_cherma(cherma, "train")
    assert e.id == stem and e.targets == (0, 4, 6, 3)
    write_split(cherma, "train", {"utt-a": dict(entry, txt_label=" 悲伤 ", video_label="厌恶")})
    (e,) = read_cherma(cherma, "train")
    assert e.targets == (5, 4, 6, 1) and "entry utt-a" in e.source
    store = convert_cherma(cherma, cherma.parent / "store", CONFIG, splits=["train"], progress=False)
    np.testing.assert_array_equal(store.split("train").labels(), [[5, 4, 6, 1]])


def test_convert_fixture_into_store(cherma, tmp_path):
    store = convert_cherma(cherma, tmp_path / "store", CONFIG, shard_size=3, progress=False)
    assert store.splits == ("train", "valid", "test")
    assert store.specs == {m: CONFIG.spec(m) for m in ("text", "audio", "vision")}
    for split in store.splits:
        raw = json.loads((cherma / f"{split}.json").read_text(encoding="utf-8"))
        view = store.split(split)
        assert view.check() == 4
        assert view.ids == [r["audio_file"][:-4] for r in raw]
        want = [[BY_HAND[r[k]] for k in ("txt_label", "audio_label", "visual_label", "video_label")] for r in raw]
        np.testing.assert_array_equal(view.labels(), want)
    view = store.split("train")
    # sample 0 has 43 audio frames: uniformly sampled down to 20; sample 1 has 10: padded, valid length 10
    audio0 = np.load(cherma / "audio" / "train" / "cherma_train_0000.npy")
    assert audio0.shape[0] == 43
    np.testing.assert_allclose(view[0].audio, audio0[np.rint(np.linspace(0, 42, 20)).astype(int)],
                               rtol=1e-3, atol=1e-3)
    assert view[0].lengths.tolist() == [16, 20, 12]
    s1 = view[1]
    assert s1.lengths.tolist() == [16, 10, 12]
    np.testing.assert_allclose(s1.audio, fit_length(np.load(cherma / "audio" / "train" / "cherma_train_0001.npy"),
                                                    20)[0], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(s1.vision, np.load(cherma / "visual" / "train" / "cherma_train_0001.mp4.npy"),
                               rtol=1e-3, atol=1e-3)


def test_dev_json_and_flat_feature_folders(cherma, tmp_path):
    (cherma / "valid.json").rename(cherma / "dev.json")
    for folder in ("text", "audio", "visual"):
        (cherma / folder / "valid").rename(cherma / folder / "dev")
        for p in (cherma / folder / "test").iterdir():  # test split without the split level
            p.rename(cherma / folder / p.name)
    assert [e.id for e in read_cherma(cherma, "valid")] == [e.id for e in read_cherma(cherma, "dev")]
    store = convert_cherma(cherma, tmp_path / "store", CONFIG, progress=False)
    assert store.splits == ("train", "valid", "test") and len(store.split("valid")) == 4
    assert len(store.split("test")) == 4


def test_resume_conversion(cherma, tmp_path):
    convert_cherma(cherma, tmp_path / "store", CONFIG, splits=["train"], progress=False)
    with pytest.raises(DataError, match="already exists here; pass resume=True"):
        convert_cherma(cherma, tmp_path / "store", CONFIG, progress=False)
    store = convert_cherma(cherma, tmp_path / "store", CONFIG, progress=False, resume=True)
    assert {s: len(store.split(s)) for s in store.splits} == {"train": 4, "valid": 4, "test": 4}


# ---------------------------------------------------------------- bad inputs

def test_missing_split_file_lists_the_files_found(cherma, tmp_path):
    (cherma / "test.json").unlink()
    with pytest.raises(DataError, match=r"no split file for 'test' \(looked for test.json\); "
                                        r"found: train.json, valid.json"):
        read_cherma(cherma, "test")
    with pytest.raises(DataError, match="no split file for 'test'"):
        convert_cherma(cherma, tmp_path / "store", CONFIG, splits=["test"], progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.json").write_text("{}")
    with pytest.raises(DataError, match=r"no CHERMA split files .*found: notes.json"):
        convert_cherma(empty, tmp_path / "store", CONFIG, progress=False)


def test_empty_split(cherma):
    write_split(cherma, "test", [])
    with pytest.raises(DataError, match=re.escape(str(cherma / "test.json")) + ": split 'test' has no entries"):
        read_cherma(cherma, "test")


def test_unknown_label_names_the_file_and_field(cherma):
    raw = json.loads((cherma / "train.json").read_text(encoding="utf-8"))
    raw[2]["audio_label"] = "开心"
    write_split(cherma, "train", raw)
    with pytest.raises(DataError, match=re.escape(str(cherma / "train.json")) +
                       r" entry 2 \(audio_label\); expected one of: .*平静"):
        read_cherma(cherma, "train")
    with pytest.raises(DataError, match="unknown cherma label '开心'"):
        read_cherma(cherma, "train")


@pytest.mark.parametrize("mutate, message", [
    (lambda raw: raw[1].pop("video_label"), r"train.json entry 1: missing or empty field\(s\) video_label"),
    (lambda raw: raw[0].update(audio_file=""), r"entry 0: missing or empty field\(s\) audio_file"),
    (lambda raw: raw.append(dict(raw[0])), r"entry 4: sample 'cherma_train_0000' appears twice"),
    (lambda raw: raw.append("oops"), r"entry 4: expected an object with audio_file"),
])
def test_bad_entries(cherma, mutate, message):
    raw = json.loads((cherma / "train.json").read_text(encoding="utf-8"))
    mutate(raw)
    write_split(cherma, "train", raw)
    with pytest.raises(DataError, match=message):
        read_cherma(cherma, "train")


def test_invalid_json(cherma):
    (cherma / "train.json").write_text('[{"audio_file": ', encoding="utf-8")
    with pytest.raises(DataError, match="train.json: not valid JSON"):
        read_cherma(cherma, "train")
    (cherma / "train.json").write_text('"just a string"', encoding="utf-8")
    with pytest.raises(DataError, match="expected a list of entries or an object keyed by sample"):
        read_cherma(cherma, "train")


def test_missing_feature_file(cherma, tmp_path):
    missing = cherma / "audio" / "valid" / "cherma_valid_0002.npy"
    missing.unlink()
    with pytest.raises(DataError, match=r"valid.json entry 2: audio feature of sample 'cherma_valid_0002' not "
                                        r"found; looked for " + re.escape(str(missing))):
        convert_cherma(cherma, tmp_path / "store", CONFIG, progress=False)
    assert not (tmp_path / "store").exists()  # located before anything was written


def test_truncated_npy(cherma, tmp_path):
    bad = cherma / "text" / "train" / "cherma_train_0003.npy"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match=re.escape(str(bad)) + ": not a readable .npy file .*truncated or corrupt"):
        convert_cherma(cherma, tmp_path / "store", CONFIG, shard_size=2, progress=False)
    # what came before the bad file is kept, and resume continues after the file is fixed
    assert len(FeatureStore(tmp_path / "store").split("train")) == 3
    np.save(bad, np.zeros((16, 32), np.float32))
    store = convert_cherma(cherma, tmp_path / "store", CONFIG, progress=False, resume=True)
    assert len(store.split("train")) == 4 and store.split("train").check() == 4


def test_pickled_npy_is_refused(cherma, tmp_path):
    bad = cherma / "visual" / "test" / "cherma_test_0000.mp4.npy"
    np.save(bad, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=re.escape(str(bad)) + ": not a readable .npy file"):
        convert_cherma(cherma, tmp_path / "store", CONFIG, progress=False)


def test_wrong_feature_dim(cherma, tmp_path):
    bad = cherma / "visual" / "train" / "cherma_train_0001.mp4.npy"
    np.save(bad, np.zeros((12, 15), np.float32))
    with pytest.raises(DataError, match=re.escape(str(bad)) + r": vision feature has shape \(12, 15\) \(float32\), "
                                                            r"expected \(T, 16\)"):
        convert_cherma(cherma, tmp_path / "store", CONFIG, progress=False)


def test_leading_unit_axis_is_accepted(cherma, tmp_path):
    path = cherma / "text" / "train" / "cherma_train_0000.npy"
    np.save(path, np.load(path)[None])
    store = convert_cherma(cherma, tmp_path / "store", CONFIG, splits=["train"], progress=False)
    assert store.split("train")[0].lengths.tolist()[0] == 16
