"""The demo clip: made with the real espeak-ng and ffmpeg, decoded back with OpenCV and ffmpeg, and looked at with
the real MTCNN. Skipped, saying what to install, where espeak-ng or ffmpeg is absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.cli.demo import main
from edge.demo import CACHE_ENV, DEFAULT_SCRIPT, demo_clip_path, make_demo_clip, portrait_path
from edge.errors import InputError

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None,
    reason="needs the espeak-ng and ffmpeg programs (sudo apt-get install espeak-ng ffmpeg)",
)
cv2 = pytest.importorskip("cv2", reason="needs OpenCV (pip install opencv-python-headless)")

SIZE, FPS = (640, 480), 25
RATE = 16_000  # the sound is checked at the pipeline's rate
FACE_SAMPLES = 5
SHORT = ("Hello there.",)  # a short clip for the command-line tests


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The module's own cache folder (``$LFMIM_EDGE_CACHE``), so nothing is written under ~/.cache."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def clip(cache) -> Path:
    return make_demo_clip()  # the default clip, into the cache


@pytest.fixture(scope="module")
def video(clip) -> dict:
    """Everything the tests look at in the decoded frames (decoded once, not kept whole: ~1 MB a frame)."""
    cap = cv2.VideoCapture(str(clip))
    info = {"width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "fps": cap.get(cv2.CAP_PROP_FPS), "declared": int(cap.get(cv2.CAP_PROP_FRAME_COUNT))}
    picks = set(np.linspace(0, info["declared"] - 1, FACE_SAMPLES).round().astype(int).tolist())
    steps, samples, first, previous, count = [], {}, None, None, 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frame = bgr.astype(np.float32)
        if previous is None:
            first = frame
        else:
            steps.append(float(np.abs(frame - previous).mean()))
        if count in picks:
            samples[count] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        previous, count = frame, count + 1
    cap.release()
    info.update(count=count, steps=np.asarray(steps), samples=samples,
                first_to_last=float(np.abs(previous - first).mean()))
    return info


def _duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True).stdout
    return float(out)


def _sound(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vn", "-f", "s16le", "-ac", "1",
                          "-ar", str(RATE), "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


# -- the picture ---------------------------------------------------------------------------------------------
def test_frames_have_the_size_rate_and_count_of_the_clip(clip, video):
    assert (video["width"], video["height"]) == SIZE
    assert video["fps"] == pytest.approx(FPS)
    assert video["count"] == video["declared"]
    seconds = _duration(clip)
    assert 7.0 < seconds < 12.0, seconds  # ~9 s of speech and pauses
    assert abs(video["count"] - seconds * FPS) <= 3, (video["count"], seconds)
    print(f"demo clip: {seconds:.2f} s, {video['count']} frames, {clip.stat().st_size / 1e6:.2f} MB")


def test_the_picture_moves_gently(video):
    steps = video["steps"]
    assert steps.size == video["count"] - 1
    # Consecutive frames are close (a slow zoom, a small tilt) but the picture never stops for long ...
    assert steps.max() < 6.0, steps.max()
    assert np.mean(steps > 0.2) > 0.9, np.sort(steps)[:10]
    # ... and over the whole clip the view changes a lot (grey levels out of 255, mean absolute difference).
    assert video["first_to_last"] > 15.0, video["first_to_last"]
    print(f"frame to frame: mean {steps.mean():.2f}, max {steps.max():.2f}; first to last {video['first_to_last']:.1f}")


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """The real MTCNN (facenet-pytorch's weights exported to ONNX, run by ONNX Runtime on one thread)."""
    pytest.importorskip("torch", reason="exporting MTCNN needs torch (pip install 'lfmim-edge[train]')")
    pytest.importorskip("onnxruntime", reason="needs onnxruntime (pip install 'lfmim-edge[cpu]')")
    from edge.features.mtcnn import detector_from_onnx
    from edge.features.mtcnn_export import export_mtcnn
    from edge.features.mtcnn_nets import INSTALL_HINT, find_mtcnn_weights

    try:
        weights = find_mtcnn_weights(None)
    except InputError:
        pytest.skip(f"MTCNN weights not found; get them with: {INSTALL_HINT}")
    out = tmp_path_factory.mktemp("mtcnn")
    export_mtcnn(weights, out)
    return detector_from_onnx(out, intra_op_num_threads=1, min_face=40)


def test_one_large_frontal_face_in_every_sampled_frame(video, detector):
    assert len(video["samples"]) == FACE_SAMPLES
    width, height = SIZE
    for index, rgb in sorted(video["samples"].items()):
        faces = detector.detect(rgb)
        assert len(faces) == 1, (index, [(f.box, f.score) for f in faces])
        (x1, y1, x2, y2), face = faces[0].box, faces[0]
        assert face.score > 0.95 and min(x2 - x1, y2 - y1) >= 100, (index, face.box, face.score)
        assert abs((x1 + x2) / 2 - width / 2) < width / 4 and abs((y1 + y2) / 2 - height / 2) < height / 4
        eyes, mouth = face.landmarks[:2], face.landmarks[3:]
        assert abs(eyes[0, 1] - eyes[1, 1]) < 0.1 * (x2 - x1)  # level eyes: frontal, barely tilted
        assert eyes[:, 1].max() < face.landmarks[2, 1] < mouth[:, 1].min()
        print(f"frame {index}: face {x2 - x1:.0f} x {y2 - y1:.0f} px, score {face.score:.3f}")


# -- the sound -----------------------------------------------------------------------------------------------
def test_the_sound_is_speech_with_pauses_as_long_as_the_picture(clip, video):
    x = _sound(clip)
    assert x.size / RATE == pytest.approx(video["count"] / FPS, abs=0.1)
    hop = RATE // 50  # 20 ms
    rms = np.sqrt(np.mean(x[: x.size // hop * hop].reshape(-1, hop) ** 2, axis=1))
    voiced = rms > 0.1 * np.percentile(rms, 95)
    loud, quiet = np.median(rms[voiced]), np.median(rms[~voiced])
    assert loud > 0.03 and loud > 30 * quiet, (loud, quiet)
    assert 0.4 < voiced.mean() < 0.9, voiced.mean()
    assert not voiced[:10].any() and not voiced[-10:].any()  # silence before the first and after the last word
    # Pauses of at least 0.4 s between the sentences, where a voice-activity detector ends each segment.
    pauses, run = 0, 0
    for v in voiced[np.argmax(voiced): len(voiced) - np.argmax(voiced[::-1])]:  # first to last voiced frame
        run = 0 if v else run + 1
        pauses += run == 20
    assert pauses == len(DEFAULT_SCRIPT) - 1, pauses
    print(f"speech: {voiced.mean():.0%} voiced, median RMS {loud:.3f} voiced vs {quiet:.5f} silent")


# -- the cache -----------------------------------------------------------------------------------------------
def test_the_cached_clip_is_reused_and_named_by_its_parameters(clip, cache):
    assert clip == demo_clip_path() and clip.parent == cache and clip.name.startswith("demo-")
    stamp = clip.stat().st_mtime_ns
    assert make_demo_clip() == clip
    assert clip.stat().st_mtime_ns == stamp
    assert [p.name for p in cache.iterdir()] == [clip.name]  # no temporary file left behind
    assert demo_clip_path(sentences=SHORT) != clip
    assert demo_clip_path(seed=1) != clip and demo_clip_path(size=(320, 240)) != clip
    assert demo_clip_path(sentences=list(DEFAULT_SCRIPT)) == clip


def test_bad_parameters_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="non-empty sentence"):
        make_demo_clip(tmp_path / "a.mp4", sentences=("fine", "  "))
    with pytest.raises(InputError, match=r"size must be even .* \(640, 480\)"):
        make_demo_clip(tmp_path / "a.mp4", size=(641, 480))
    with pytest.raises(InputError, match="fps must be"):
        make_demo_clip(tmp_path / "a.mp4", fps=0)
    with pytest.raises(InputError, match="is a folder"):
        make_demo_clip(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_portrait_ships_in_the_package_and_is_a_real_jpeg():
    path = portrait_path()
    assert path.name == "grace_hopper.jpg" and path.parent.name == "demo" and path.parent.parent.name == "assets"
    cv2 = pytest.importorskip("cv2")
    image = cv2.imread(str(path))
    assert image is not None and image.shape == (600, 512, 3)


def test_the_run_path_never_imports_torch():
    code = "import sys, edge.demo, edge.cli.demo; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -- the command ---------------------------------------------------------------------------------------------
def test_the_command_writes_the_clip_and_says_how_to_play_it(tmp_path, capsys):
    out = tmp_path / "short.mp4"
    assert main([str(out), "--text", SHORT[0]]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == str(out)
    assert f"edge-run --video {out}" in printed.err
    assert out.is_file() and 1.0 < _duration(out) < 4.0
    # An existing file is kept unless --overwrite.
    stamp = out.stat().st_mtime_ns
    assert main([str(out), "--text", SHORT[0], "-q"]) == 2
    assert "already exists" in capsys.readouterr().err and out.stat().st_mtime_ns == stamp
    assert main([str(out), "--text", SHORT[0], "--overwrite", "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.mp4"]


def test_a_missing_program_is_one_line_that_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    tools = tmp_path / "bin"
    tools.mkdir()
    os.symlink(shutil.which("ffmpeg"), tools / "ffmpeg")  # ffmpeg there, espeak-ng not
    monkeypatch.setenv("PATH", str(tools))
    out = tmp_path / "demo.mp4"
    assert main([str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edge-demo: error: ")
    assert "'espeak-ng'" in err and "'ffmpeg'" not in err and "sudo apt-get install espeak-ng ffmpeg" in err
    assert not out.exists()


def test_a_failing_program_is_reported_with_its_last_words(tmp_path, monkeypatch):
    """A stand-in espeak-ng (a shell script) that fails as a broken install does: the real subprocess path."""
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "espeak-ng").write_text("#!/bin/sh\necho 'espeak-ng: no voice data found' >&2\nexit 1\n")
    (tools / "espeak-ng").chmod(0o755)
    os.symlink(shutil.which("ffmpeg"), tools / "ffmpeg")
    monkeypatch.setenv("PATH", str(tools))
    with pytest.raises(InputError, match=r"espeak-ng speaking .* failed \(espeak-ng exited with 1: espeak-ng: no "
                                         r"voice data found\)"):
        make_demo_clip(tmp_path / "demo.mp4", sentences=SHORT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]
