"""The live loop end to end on real media, through real sources, stages, threads, queues and ONNX Runtime
sessions of a real (tiny, random-weight, FP32) build of the paper's architectures."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from edge.cli import run as run_cli
from edge.stream.config import RunConfig
from edge.stream.estimate import Smoother
from edge.stream.recognizer import Recognizer
from edge.stream.rings import AudioRing, FrameEntry, FrameRing

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "fixtures" / "tiny.toml")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")]
pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (pip install pocketsphinx)")


@pytest.fixture(scope="module")
def engines(tiny_build) -> str:
    return str(tiny_build)


def _run(engines: str, tmp_path: Path, *args: str) -> tuple[int, list[dict], dict, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "out.jsonl"
    summary = tmp_path / "summary.json"
    rc = run_cli.main(["--profile", TINY, "--engines", engines, "--jsonl", str(out), "--no-view", "-q",
                       "--summary-json", str(summary), *args])
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return rc, lines, json.loads(summary.read_text()) if summary.exists() else {}, str(out)


def _valid(probs) -> bool:
    p = np.asarray(probs)
    return p.shape == (7,) and (p >= 0).all() and abs(p.sum() - 1.0) < 1e-4


def test_replay_of_a_real_clip_gives_all_three_modalities(engines, tmp_path, shared_data):
    clip = shared_data / "crema-d-samples" / "1001_DFA_ANG_XX.mp4"
    rc, lines, summary, _ = _run(engines, tmp_path, "--video", str(clip), "--speed", "max")
    assert rc == 0, summary
    assert len(lines) >= 4
    times = [line["media_time"] for line in lines]
    assert times == sorted(times) and len(set(times)) == len(times)
    for line in lines:
        for output, probs in line["probs"].items():
            assert probs is None or _valid(probs), (output, probs)
        assert (line["probs"]["fused"] is None) == (not any(line["available"].values()))
    assert summary["frames_with_face"] >= 0.9 * summary["frames"] > 0
    assert any(line["available"]["audio"] for line in lines), "speech must be detected"
    last = lines[-1]
    assert last["transcript"] and all(last["available"].values()), last
    assert summary["speech_segments"] >= 1 and summary["dropped_frames"] == 0


def test_two_max_speed_runs_are_identical(engines, tmp_path, shared_data):
    clip = str(shared_data / "crema-d-samples" / "1001_DFA_SAD_XX.mp4")

    def strip(lines):
        return [{k: v for k, v in line.items() if k != "latency_ms"} for line in lines]

    first = _run(engines, tmp_path / "a", "--video", clip, "--speed", "max")[1]
    second = _run(engines, tmp_path / "b", "--video", clip, "--speed", "max")[1]
    assert first and strip(first) == strip(second)


def test_missing_modalities_are_reported_never_invented(engines, tmp_path, shared_data):
    # audio only: no frames at all
    flac = shared_data / "ravdess-speech" / "Actor_01" / "03-01-05-01-01-01-01.flac"
    rc, lines, _, _ = _run(engines, tmp_path / "a", "--audio", str(flac), "--speed", "max")
    assert rc == 0 and lines
    assert all(line["probs"]["vision"] is None and line["labels"]["vision"] is None for line in lines)
    assert all(line["age_s"]["vision"] is None for line in lines)
    assert any(line["available"]["audio"] for line in lines)
    # a silent clip without a face: nothing to go on, so no estimate is made up
    from edge.testmedia import make_clip

    clip = make_clip(tmp_path / "blank.mp4", seconds=1.5, fps=16.0)
    rc, lines, summary, _ = _run(engines, tmp_path / "b", "--video", str(clip), "--speed", "max")
    assert rc == 0 and lines and summary["frames_with_face"] == 0
    for line in lines:
        assert line["available"] == {"text": False, "audio": False, "vision": False}
        assert line["label"] is None and line["probs"]["fused"] is None and line["confidence"] is None


def test_a_truncated_file_ends_with_a_clear_message_after_what_it_produced(engines, tmp_path, shared_data, capsys):
    from edge.testmedia import remux_faststart, truncate

    whole = remux_faststart(shared_data / "crema-d-samples" / "1001_DFA_HAP_XX.mp4", tmp_path / "whole.mp4")
    cut = truncate(whole, tmp_path / "cut.mp4", 0.6)
    rc, lines, summary, _ = _run(engines, tmp_path, "--video", str(cut), "--speed", "max")
    err = capsys.readouterr().err
    assert rc == 1 and lines, "estimates made before the error are kept"
    assert summary["errors"] and "cut.mp4" in summary["errors"][0]
    assert "edge-run: " in err and "cut.mp4" in err


def test_python_api_from_another_thread(engines, shared_data):
    from edge.runtime.engines import open_engines

    clip = str(shared_data / "crema-d-samples" / "1001_DFA_NEU_XX.mp4")
    config = RunConfig(profile=TINY, engines=engines, video=clip, speed="realtime", asr="none")
    with open_engines(TINY, directory=engines) as shared:
        seen, got = [], []
        recognizer = Recognizer(config, engines=shared)
        recognizer.on_estimate(seen.append)
        before = set(threading.enumerate())
        worker = threading.Thread(target=recognizer.start)
        worker.start()
        worker.join(30)
        for estimate in recognizer.estimates(timeout=15):
            got.append(estimate)
            assert recognizer.latest() is not None
        assert recognizer.wait(10)
        recognizer.stop()
        assert got and [e.index for e in got] == list(range(len(got)))
        assert [e.index for e in seen] == [e.index for e in got]
        assert all(e.latency_ms.get("end_to_end", 0) > 0 for e in got), "live runs measure end-to-end latency"
        leftover = [t for t in set(threading.enumerate()) - before if t.is_alive() and t.name.startswith("edge-")]
        assert not leftover, leftover


def test_no_camera_is_one_line_that_suggests_video(capsys):
    import glob

    if glob.glob("/dev/video*"):
        pytest.skip("this machine has a camera")
    assert run_cli.main(["--camera", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no camera at index 0" in err[0] and "--video" in err[0]


def test_cli_flags_match_the_config_dataclass():
    import dataclasses

    dests = {a.dest for a in run_cli.build_parser()._actions}
    assert {f.name for f in dataclasses.fields(RunConfig)} <= dests
    assert set(run_cli.config_fields()) == {f.name for f in dataclasses.fields(RunConfig)}


def test_smoothing_and_rings():
    s = Smoother("ema", alpha=0.5)
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert np.allclose(s("fused", a), a) and np.allclose(s("fused", b), [0.5, 0.5])
    assert s("fused", None) is None and np.allclose(s("fused", a), [0.75, 0.25]), "unavailable keeps the state"
    m = Smoother("mean", window=2)
    m("x", a), m("x", b)
    assert np.allclose(m("x", b), [0.0, 1.0])
    ring = AudioRing(1.0, 10)
    ring.push(0.0, np.arange(5, dtype=np.float32))
    ring.push(1.0, np.ones(5, np.float32))  # a 0.5 s gap becomes silence, time stays aligned
    assert ring.gap_samples == 5 and np.allclose(ring.window(1.5, 1.0), [0] * 5 + [1] * 5)
    frames = FrameRing(2.0)
    for i in range(10):
        frames.push(FrameEntry(i * 0.5, None, None, 0.0))
    assert [e.t for e in frames.window(4.5, 1.0)] == [4.0, 4.5] and len(frames) == 5


def test_buffers_stay_bounded_over_long_runs():
    """Ten minutes of 16 fps frames and 16 kHz audio: the rings keep their time window, nothing more."""
    frames, audio = FrameRing(14.0), AudioRing(14.0, 16000)
    feature = np.zeros(512, np.float32)
    chunk = np.zeros(512, np.float32)
    for i in range(600 * 16):
        frames.push(FrameEntry(i / 16, feature, None, 1.0))
    for i in range(600 * 16000 // 512):
        audio.push(i * 512 / 16000, chunk)
    assert len(frames) <= 14 * 16 + 1
    assert audio._buf.size == 14 * 16000 and audio.window(600.0, 20.0).size <= 14 * 16000


def test_partial_transcripts_arrive_while_speech_goes_on(engines, tmp_path, shared_data):
    clip = shared_data / "crema-d-samples" / "1001_DFA_HAP_XX.mp4"
    rc, lines, summary, _ = _run(engines, tmp_path, "--video", str(clip), "--speed", "max", "--partial-s", "0.5")
    assert rc == 0 and summary["partial_transcripts"] >= 1 and summary["transcripts"]
    assert lines[-1]["transcript"], "the final transcript replaces the partial ones"
    early = [line for line in lines[:-1] if line["transcript"]]
    assert early, "a transcript is available before the speech has ended"


def test_the_first_run_of_a_profile_builds_it(tmp_path, shared_data, caplog):
    pytest.importorskip("torch", reason="a non-starter profile is exported with PyTorch (pip install 'lfmim-edge[train,build]')")
    clip = shared_data / "crema-d-samples" / "1001_DFA_FEA_XX.mp4"
    root = tmp_path / "engines"
    rc = run_cli.main(["--profile", TINY, "--engines-root", str(root), "--random-weights", "--video", str(clip),
                       "--speed", "max", "--asr", "none", "--jsonl", str(tmp_path / "o.jsonl"), "--no-view", "-q"])
    assert rc == 0 and (root / "tiny" / "cpu" / "manifest.json").is_file()
    assert (tmp_path / "o.jsonl").read_text().count("\n") >= 3
    assert "building it now" in caplog.text and "RANDOM weights" in caplog.text
