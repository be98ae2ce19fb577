"""edge-extract: real clips -> the feature store through the run path, resume, bad clips, bad manifests, and the
store feeding edge-train.  One tiny fp32 build (random weights, no calibration) serves the whole module."""

from __future__ import annotations

import csv
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from edge.cli import extract as cli
from edge.errors import DataError, InputError
from edge.labels import INDEX
from edge.train import clips as clips_mod
from edge.train.clips import read_clip_manifest
from edge.train.store import FeatureStore

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny.toml"
TRANSCRIPT = "Don't forget a jacket"
COLUMNS = ("path", "id", "split", "transcript", "label")
REAL_TIMED_EXTRACT = clips_mod.timed_extract


def write_manifest(path: Path, rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def build_dir(tiny_build) -> Path:
    return tiny_build


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Clips made on the spot: spoken words over a moving gradient, the same words as audio only, a silent video."""
    from edge.testmedia import make_clip, synth_speech

    missing = [t for t in ("ffmpeg", "ffprobe", "espeak-ng") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"making test media needs {', '.join(missing)} (apt-get install ffmpeg espeak-ng)")
    d = tmp_path_factory.mktemp("media")
    wav = synth_speech("Kids are talking by the door", d / "speech.wav")
    return {"speech_clip": make_clip(d / "speech.mp4", seconds=1.5, audio_wav=wav),
            "speech_wav": wav, "silent": make_clip(d / "silent.mp4", seconds=1.0)}


@pytest.fixture(scope="module")
def crema_rows(shared_data) -> list[dict]:
    folder = shared_data / "crema-d-samples"
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    valid = {"1001_DFA_NEU_XX.mp4", "1001_DFA_SAD_XX.mp4"}
    return [{"path": str(folder / r["file"]), "id": r["file"][:-4], "split": "valid" if r["file"] in valid else "train",
             "transcript": TRANSCRIPT, "label": r["emotion"]} for r in table]


def run_extract(manifest: Path, out: Path, build_dir: Path, *extra: str) -> int:
    return cli.main(["--manifest", str(manifest), "--out", str(out), "--profile", str(TINY),
                     "--engines", str(build_dir), "--no-progress", *extra])


class CountingExtract:
    """Wraps clips.timed_extract to count the clips actually extracted."""

    def __init__(self, monkeypatch) -> None:
        self.ids: list[str] = []
        self._real = REAL_TIMED_EXTRACT
        monkeypatch.setattr(clips_mod, "timed_extract", self)

    def __call__(self, extractors, clip):
        self.ids.append(clip.id)
        return self._real(extractors, clip)


@pytest.fixture(scope="module")
def extracted(build_dir, crema_rows, media, tmp_path_factory) -> dict:
    """Extract 3 CREMA-D clips, then (resuming) all 6 and a synthetic speech clip; record what each run did."""
    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp("extract")
    out = d / "store"
    speech = {"path": str(media["speech_clip"]), "id": "speech", "split": "train", "transcript": "",
              "label": "neutral"}
    first = write_manifest(d / "first.csv", crema_rows[:3])
    full = write_manifest(d / "full.csv", [*crema_rows, speech])
    try:
        counter = CountingExtract(mp)
        started = time.perf_counter()
        rc1 = run_extract(first, out, build_dir)
        first_ids = list(counter.ids)
        shard0 = out / "train" / "shard-00000" / "text.npy"
        mtime = shard0.stat().st_mtime_ns
        counter.ids.clear()
        rc2 = run_extract(full, out, build_dir)
        seconds = time.perf_counter() - started
    finally:
        mp.undo()
    return {"out": out, "rc": (rc1, rc2), "first_ids": first_ids, "second_ids": list(counter.ids),
            "shard0": shard0, "mtime": mtime, "rows": [*crema_rows, speech], "seconds": seconds}


def _sample(store: FeatureStore, clip_id: str):
    for split in store.splits:
        view = store.split(split)
        if clip_id in view.ids:
            return view[view.ids.index(clip_id)]
    raise KeyError(clip_id)


def test_resume_skips_clips_already_stored(extracted, capsys):
    assert extracted["rc"] == (0, 0)
    assert extracted["first_ids"] == [r["id"] for r in extracted["rows"][:3]]
    # The second run extracts only the 4 new clips; shard 0 of the first run is untouched.
    assert extracted["second_ids"] == [r["id"] for r in extracted["rows"][3:]]
    assert extracted["shard0"].stat().st_mtime_ns == extracted["mtime"]
    store = FeatureStore(extracted["out"])
    stored = sorted(i for s in store.splits for i in store.split(s).ids)
    assert stored == sorted(r["id"] for r in extracted["rows"])
    assert sorted(store.split("valid").ids) == ["1001_DFA_NEU_XX", "1001_DFA_SAD_XX"]
    assert (extracted["out"] / cli.ERRORS_FILE).read_text() == ""


def test_labels_and_faces(extracted):
    store = FeatureStore(extracted["out"])
    assert store.classes == tuple(INDEX)
    for row in extracted["rows"]:
        sample = _sample(store, row["id"])
        assert sample.labels.tolist() == [INDEX[row["label"]]] * 4
    records = [json.loads(line) for line in (extracted["out"] / cli.CLIPS_FILE).read_text().splitlines()]
    assert [r["id"] for r in records] == [r["id"] for r in extracted["rows"]]
    crema = [r for r in records if r["id"].startswith("1001_")]
    # Real faces: found in (nearly) every sampled frame of the CREMA-D clips; none in the gradient clip.
    assert all(r["has_audio"] and r["has_video"] and r["sampled_frames"] == 8 for r in crema)
    assert sum(r["faces"] for r in crema) >= 0.95 * 8 * len(crema)
    speech = next(r for r in records if r["id"] == "speech")
    assert speech["faces"] == 0 and speech["audio_seconds"] > 1.0
    assert not _sample(store, "speech").vision.any()


def test_stored_features_equal_the_run_path(extracted, build_dir):
    from edge.features.extractors import Extractors
    from edge.media import read_audio
    from edge.profile import load_profile
    from edge.runtime.engines import open_engines
    from edge.video import VideoFileReader

    row = extracted["rows"][0]
    profile = load_profile(TINY)
    with open_engines(profile, directory=build_dir) as engines:
        ex = Extractors(engines)
        samples, _ = read_audio(row["path"], sample_rate=profile.audio.sample_rate)
        frames = [f for _, f in VideoFileReader(row["path"], fps=profile.vision.fps)]
        text = ex.text([TRANSCRIPT])[0]
        audio = ex.audio(samples)
        vision, faces = ex.vision(frames)
    stored = _sample(FeatureStore(extracted["out"]), row["id"])
    assert faces == 8
    for name, direct in (("text", text), ("audio", audio), ("vision", vision)):
        got = getattr(stored, name)
        assert got.shape == direct.shape, name
        np.testing.assert_allclose(got, direct, rtol=2e-3, atol=2e-3, err_msg=name)  # float16 storage
    assert np.abs(vision).sum() > 0


def test_broken_clips_are_listed_and_the_others_written(build_dir, media, crema_rows, tmp_path, capsys):
    from edge.testmedia import remux_faststart, truncate

    # Index at the front: the truncated copy opens, and decoding stops half way.
    whole = remux_faststart(crema_rows[0]["path"], tmp_path / "whole.mp4")
    truncated = truncate(whole, tmp_path / "truncated.mp4", 0.5)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    rows = [{"path": str(media["speech_wav"]), "id": "audio-only", "label": "happiness"},
            {"path": str(truncated), "id": "truncated", "label": "anger"},
            {"path": str(text), "id": "text", "label": "anger"},
            {"path": "gone.mp4", "id": "missing", "label": "anger"},
            {"path": str(media["silent"]), "id": "silent", "label": "sadness"}]
    manifest = write_manifest(tmp_path / "clips.csv", rows)
    out = tmp_path / "store"
    assert run_extract(manifest, out, build_dir) == 1
    summary = capsys.readouterr().out
    assert "2 clips written, 0 skipped (already in the store), 3 failed" in summary
    errors = [json.loads(line) for line in (out / cli.ERRORS_FILE).read_text().splitlines()]
    assert [e["id"] for e in errors] == ["truncated", "text", "missing"]
    assert all("\n" not in e["message"] and e["line"].startswith(str(manifest)) for e in errors)
    assert "truncated" in errors[0]["message"] and "not a media file" in errors[1]["message"]
    assert "not found" in errors[2]["message"] and "gone.mp4" in errors[2]["message"]
    store = FeatureStore(out)
    assert sorted(store.split("train").ids) == ["audio-only", "silent"]
    audio_only, silent = _sample(store, "audio-only"), _sample(store, "silent")
    assert not audio_only.vision.any() and audio_only.audio.any()
    assert not silent.audio.any() and silent.text.any()
    records = {r["id"]: r for r in map(json.loads, (out / cli.CLIPS_FILE).read_text().splitlines())}
    assert (records["audio-only"]["has_video"], records["silent"]["has_audio"]) == (False, False)


def test_interrupted_run_keeps_what_was_extracted(build_dir, media, tmp_path, monkeypatch):
    rows = [{"path": str(media["speech_wav"]), "id": f"clip{i}", "label": "neutral"} for i in range(3)]
    manifest = write_manifest(tmp_path / "clips.csv", rows)
    out = tmp_path / "store"
    def interrupt_on_second(extractors, clip):
        if clip.id == "clip1":
            raise KeyboardInterrupt
        return REAL_TIMED_EXTRACT(extractors, clip)

    monkeypatch.setattr(clips_mod, "timed_extract", interrupt_on_second)
    assert run_extract(manifest, out, build_dir) == 130
    assert FeatureStore(out).split("train").ids == ["clip0"]
    counter = CountingExtract(monkeypatch)
    assert run_extract(manifest, out, build_dir) == 0
    assert counter.ids == ["clip1", "clip2"]
    assert FeatureStore(out).split("train").ids == ["clip0", "clip1", "clip2"]


@pytest.mark.parametrize("columns, rows, match", [
    (("file", "label"), [{"file": "a.mp4", "label": "anger"}], r"clips\.csv:1: .*no 'path' column; columns found: file, label"),
    (("path", "label"), [{"path": "a.mp4", "label": "anger"}, {"path": "b.mp4", "label": "joyful"}],
     r"unknown canonical label 'joyful' in .*clips\.csv:3"),
    (("path", "id", "label"), [{"path": "a.mp4", "id": "x", "label": "anger"}, {"path": "b.mp4", "id": "x", "label": "fear"}],
     r"clips\.csv:3: duplicate id 'x' \(first at line 2\)"),
    (("path", "label"), [], r"clips\.csv: the clip manifest lists no clips"),
])
def test_bad_manifest_exits_2_with_one_line(tmp_path, capsys, columns, rows, match):
    manifest = write_manifest(tmp_path / "clips.csv", rows, columns)
    rc = cli.main(["--manifest", str(manifest), "--out", str(tmp_path / "store"), "--profile", str(TINY),
                   "--engines", str(tmp_path / "no-build"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("edge-extract: error: ")
    assert re.search(match, err), err
    assert not (tmp_path / "store").exists()


def test_missing_manifest_and_missing_build(tmp_path, capsys):
    assert cli.main(["--manifest", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "s"), "--profile", str(TINY)]) == 2
    assert "clip manifest not found" in capsys.readouterr().err
    manifest = write_manifest(tmp_path / "clips.csv", [{"path": "a.mp4", "label": "anger"}], ("path", "label"))
    assert cli.main(["--manifest", str(manifest), "--out", str(tmp_path / "s"), "--profile", str(TINY),
                     "--engines-root", str(tmp_path / "engines")]) == 2
    assert "edge-build" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_manifest_reader_defaults_vocabularies_and_per_modality_labels(tmp_path):
    (tmp_path / "media").mkdir()
    manifest = write_manifest(tmp_path / "clips.csv", [
        {"path": "a.mp4", "label_text": "NEU", "label_audio": "", "label_vision": "HAP", "label": "ANG",
         "transcript": "  hello  ", "fold": "dev"},
        {"path": "/abs/b.wav", "label_multimodal": "SUR"},
    ], ("path", "label_text", "label_audio", "label_vision", "label_multimodal", "label", "transcript", "fold"))
    with pytest.raises(InputError, match=r"unknown crema-d label 'SUR' in .*clips\.csv:3"):
        read_clip_manifest(manifest, vocabulary="crema-d")
    rows = manifest.read_text().replace(",SUR,", ",sad,")
    manifest.write_text(rows)
    a, b = read_clip_manifest(manifest, vocabulary="crema-d", media_root=tmp_path / "media", split_column="fold")
    assert (a.id, a.path, a.split, a.transcript) == ("a.mp4", tmp_path / "media" / "a.mp4", "dev", "hello")
    assert a.labels == (INDEX["neutral"], INDEX["anger"], INDEX["happiness"], INDEX["anger"])
    assert (b.path, b.split, b.labels) == (Path("/abs/b.wav"), "train", (-1, -1, -1, INDEX["sadness"]))
    assert b.source.endswith("clips.csv:3")
    with pytest.raises(DataError, match="not found"):
        read_clip_manifest(tmp_path / "missing.csv")


def test_check_only_validates(tmp_path, crema_rows, capsys):
    rows = [*crema_rows[:2], {"path": "gone.mp4", "id": "gone", "label": "anger"}]
    manifest = write_manifest(tmp_path / "clips.csv", rows)
    out = tmp_path / "store"
    assert cli.main(["--manifest", str(manifest), "--out", str(out), "--profile", str(TINY), "--check"]) == 1
    printed = capsys.readouterr().out
    assert "3 clips (train: 3)" in printed and "would extract 3 clips" in printed
    assert "missing media:" in printed and "gone.mp4" in printed and "clips.csv:4" in printed
    assert not out.exists()
    write_manifest(manifest, rows[:2])
    assert cli.main(["--manifest", str(manifest), "--out", str(out), "--profile", str(TINY), "--check"]) == 0
    assert "manifest OK" in capsys.readouterr().out


def test_check_counts_clips_already_stored(extracted, tmp_path, capsys):
    manifest = write_manifest(tmp_path / "clips.csv", extracted["rows"])
    assert cli.main(["--manifest", str(manifest), "--out", str(extracted["out"]), "--profile", str(TINY),
                     "--check"]) == 0
    assert "would extract 0 clips" in capsys.readouterr().out


def test_edge_train_runs_on_the_extracted_store(extracted, tmp_path):
    from edge.cli import train

    out = tmp_path / "model"
    rc = train.main(["--store", str(extracted["out"]), "--out", str(out), "--model", "paper", "--d-model", "32",
                     "--num-layers", "1", "--num-heads", "4", "--epochs", "1", "--batch-size", "4", "--no-progress",
                     "-q"])
    assert rc == 0
    assert (out / "best.safetensors").is_file() and (out / "history.jsonl").is_file()


def test_long_clips_keep_only_the_sampled_frames(crema_rows):
    from edge.features.vision_pre import sample_frames
    from edge.train.clips import read_clip_frames

    path = Path(crema_rows[0]["path"])
    whole = read_clip_frames(path, fps=16.0, segments=4, per_segment=2)
    picked = read_clip_frames(path, fps=16.0, segments=4, per_segment=2, budget_bytes=1)  # forces two passes
    assert isinstance(whole, list) and len(picked) == len(whole) > 8
    for i in sample_frames(len(whole), 4, 2).tolist():
        np.testing.assert_array_equal(picked[i], whole[i])
    with pytest.raises(IndexError):
        picked[len(whole) + 5]
