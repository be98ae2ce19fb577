"""Media decoding on real files: CREMA-D clips, RAVDESS FLAC, and clips made here with espeak-ng and ffmpeg."""

from __future__ import annotations

import os
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from edge import media
from edge.errors import InputError
from edge.media import AudioFileStream, probe, read_audio
from edge.testmedia import make_clip, remux_faststart, synth_speech, truncate

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="ffmpeg/ffprobe not installed (apt-get install ffmpeg, or brew install ffmpeg)",
)

SR = 16_000
SENTENCE = "Don't forget a jacket, it is cold outside."


def _cv2():
    return pytest.importorskip("cv2", reason="opencv is not installed (pip install opencv-python-headless)")


@pytest.fixture(scope="session")
def crema(shared_data: Path) -> list[Path]:
    clips = sorted((shared_data / "crema-d-samples").glob("*.mp4"))
    if not clips:
        pytest.skip(f"no CREMA-D clips in {shared_data / 'crema-d-samples'}")
    return clips


@pytest.fixture(scope="session")
def made(tmp_path_factory) -> dict[str, Path]:
    """Speech from espeak-ng, a clip with it as sound track, and a silent clip."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("media")
    speech = synth_speech(SENTENCE, root / "speech.wav")
    with wave.open(str(speech)) as w:
        seconds = w.getnframes() / w.getframerate() + 0.5
    return {
        "speech": speech,
        "seconds": seconds,
        "clip": make_clip(root / "talk.mp4", seconds=seconds, fps=25, audio_wav=speech),
        "silent": make_clip(root / "silent.mp4", seconds=1.0, fps=20),
    }


def _write_wav(path: Path, x: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1 if x.ndim == 1 else x.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _envelope(x: np.ndarray, hop: int = 320) -> np.ndarray:
    n = x.size // hop
    return np.sqrt((x[: n * hop].reshape(n, hop).astype(np.float64) ** 2).mean(axis=1))


# ---------------------------------------------------------------------------------------------------- audio


def test_crema_audio_decodes(crema):
    for clip in crema:
        x, sr = read_audio(clip)
        assert sr == SR and x.dtype == np.float32 and x.ndim == 1
        assert 1.8 < x.size / SR < 2.6, clip.name
        assert np.abs(x).max() <= 1.0
        assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 0.005, f"{clip.name} decodes to near silence"


def test_ravdess_flac_duration_matches_ffprobe(shared_data):
    flacs = sorted((shared_data / "ravdess-speech").glob("Actor_*/*.flac"))
    if not flacs:
        pytest.skip("no RAVDESS FLAC files found")
    for path in flacs[:2]:
        x, sr = read_audio(path)
        assert abs(x.size / sr - probe(path)["duration"]) < 0.020
        assert np.sqrt(np.mean(x**2)) > 1e-3


def test_stream_concatenation_equals_read_audio(crema, shared_data):
    paths = [crema[0], *sorted((shared_data / "ravdess-speech").glob("Actor_01/*.flac"))[:1]]
    for path in paths:
        whole, _ = read_audio(path)
        with AudioFileStream(path, chunk=512) as stream:
            parts = list(stream)
        assert all(c.size == 512 for _, c in parts[:-1]) and 0 < parts[-1][1].size <= 512
        assert [t for t, _ in parts] == [i * 512 / SR for i in range(len(parts))]
        assert np.array_equal(np.concatenate([c for _, c in parts]), whole)


def test_stream_close_kills_ffmpeg(tmp_path):
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 30 * SR)  # 30 s: ffmpeg blocks on a full pipe
    path = _write_wav(tmp_path / "long.wav", noise, SR)
    stream = AudioFileStream(path)
    t, chunk = next(stream)
    pid = stream.pid
    assert t == 0.0 and chunk.size == 512 and pid is not None
    os.kill(pid, 0)  # running (or at least not reaped)
    stream.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: no zombie left
    assert list(stream) == []

    with AudioFileStream(path) as stream:  # leaving the with block early does the same
        for _ in stream:
            break
        pid = stream.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_truncated_audio_raises_after_what_decoded(crema, tmp_path):
    cut = truncate(remux_faststart(crema[0], tmp_path / "fs.mp4"), tmp_path / "cut.mp4", 0.6)
    with pytest.raises(InputError, match=r"cut\.mp4.*truncated"):
        read_audio(cut)
    got = []
    with pytest.raises(InputError, match=r"truncated.*decoded audio ends at \d"):
        for _, chunk in AudioFileStream(cut):
            got.append(chunk)
    whole, _ = read_audio(crema[0])
    assert 0.2 * whole.size < sum(c.size for c in got) < whole.size


def test_no_audio_stream(made):
    with pytest.raises(InputError, match="no audio stream"):
        read_audio(made["silent"])
    with pytest.raises(InputError, match="no audio stream"):
        next(AudioFileStream(made["silent"]))


def test_wav_without_ffmpeg(made, tmp_path, monkeypatch):
    reference, _ = read_audio(made["speech"])
    tone = np.sin(2 * np.pi * 440 * np.arange(22_050) / 22_050) * 0.5
    stereo = _write_wav(tmp_path / "tone.wav", np.stack([tone, tone], axis=1), 22_050)
    via_ffmpeg, _ = read_audio(stereo)
    monkeypatch.setattr(media, "FFMPEG", "ffmpeg-not-installed-here")
    x, sr = read_audio(made["speech"])
    assert sr == SR and np.array_equal(x, reference)  # int16 / 32768 either way
    y, _ = read_audio(stereo)
    assert abs(y.size - via_ffmpeg.size) <= 2 and np.corrcoef(y[:16_000], via_ffmpeg[:16_000])[0, 1] > 0.99
    assert np.array_equal(np.concatenate([c for _, c in AudioFileStream(made["speech"])]), reference)
    with pytest.raises(InputError, match=r"talk\.mp4.*apt-get install ffmpeg.*brew install ffmpeg"):
        read_audio(made["clip"])


# ---------------------------------------------------------------------------------------------------- video


def test_crema_video_frames(crema):
    cv2 = _cv2()
    from edge.video import VideoFileReader

    for clip in crema:
        reader = VideoFileReader(clip)
        assert reader.fps == pytest.approx(29.97, abs=0.01) and reader.size == (480, 360)
        assert reader.duration == pytest.approx(reader.frame_count / reader.fps)
        frames = list(reader)
        assert len(frames) == reader.frame_count and 1.8 < reader.duration < 2.6
        times = np.array([t for t, _ in frames])
        assert times[0] == 0.0 and np.all(np.diff(times) > 0)
        assert np.allclose(np.diff(times), 1 / reader.fps, atol=2e-3)
        assert all(f.shape == (360, 480, 3) and f.dtype == np.uint8 for _, f in frames)
    cap = cv2.VideoCapture(str(crema[0]))
    ok, bgr = cap.read()
    cap.release()
    first = next(iter(VideoFileReader(crema[0])))[1]
    assert ok and np.array_equal(first, bgr[:, :, ::-1])  # RGB, not BGR


def test_resample_to_16_fps(crema):
    _cv2()
    from edge.video import VideoFileReader

    for clip in crema:
        native = {t for t, _ in VideoFileReader(clip)}
        reader = VideoFileReader(clip, fps=16)
        times = np.array([t for t, _ in reader])
        assert len(times) / reader.duration == pytest.approx(16, abs=0.8)
        assert np.all(np.diff(times) > 0) and np.diff(times).max() < 2 / 16
        assert set(times) <= native  # frames are kept, never invented
    slow = VideoFileReader(crema[0], fps=100)  # faster than the source: every frame, once
    assert len(list(slow)) == slow.frame_count


def test_read_frames_paper_sampling(crema, tmp_path):
    _cv2()
    from edge.features.vision_pre import sample_frames
    from edge.video import VideoFileReader, read_frames

    frames = [f for _, f in VideoFileReader(crema[0])]
    idx = sample_frames(len(frames))
    got = read_frames(crema[0], idx)
    assert got.shape == (64, 360, 480, 3) and got.dtype == np.uint8
    assert all(np.array_equal(g, frames[i]) for g, i in zip(got, idx))
    with pytest.raises(InputError, match=f"frame 500 .* only {len(frames)} frames"):
        read_frames(crema[0], [3, 500])
    long = make_clip(tmp_path / "long.mp4", seconds=12, fps=30, size=(96, 64))  # crosses SEEK_GAP by seeking
    every = [f for _, f in VideoFileReader(long)]
    got = read_frames(long, [350, 4, 350])
    assert all(np.array_equal(g, every[i]) for g, i in zip(got, [350, 4, 350]))


def test_truncated_video_yields_then_raises(crema, tmp_path):
    _cv2()
    from edge.video import VideoFileReader

    cut = truncate(remux_faststart(crema[0], tmp_path / "fs.mp4"), tmp_path / "cut.mp4", 0.6)
    reader = VideoFileReader(cut)
    seen = []
    with pytest.raises(InputError, match=r"cut\.mp4.*truncated.*last good frame is at \d+\.\d+ s"):
        for t, _ in reader:
            seen.append(t)
    assert 5 < len(seen) < reader.frame_count
    tail_cut = truncate(crema[0], tmp_path / "tail.mp4", 0.6)  # the index (moov) sits at the end: lost
    with pytest.raises(InputError, match=r"cannot open .*tail\.mp4.*Formats that work.*ffprobe"):
        VideoFileReader(tail_cut)


def test_made_clip_round_trip(made, crema):
    _cv2()
    from edge.video import VideoFileReader

    info = probe(made["clip"])
    assert info["has_audio"] and info["has_video"]
    assert info["duration"] == pytest.approx(made["seconds"], abs=0.1)
    reader = VideoFileReader(made["clip"])
    assert reader.fps == pytest.approx(25) and reader.size == (320, 240)
    assert abs(reader.frame_count - round(made["seconds"] * 25)) <= 1
    frames = [f for _, f in reader]
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 5  # the gradient moves
    speech, _ = read_audio(made["speech"])
    sound, _ = read_audio(made["clip"])
    a, b = _envelope(speech), _envelope(sound)
    n = min(a.size, b.size)
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.9

    face = next(iter(VideoFileReader(crema[0])))[1]
    still = make_clip(made["clip"].with_name("face.mp4"), image=face, seconds=0.5, fps=10)
    first = next(iter(VideoFileReader(still)))[1]
    assert first.shape == face.shape and np.abs(first.astype(int) - face.astype(int)).mean() < 8
    assert not probe(still)["has_audio"]


# ---------------------------------------------------------------------------------------------------- errors


def test_bad_inputs(tmp_path):
    _cv2()
    from edge.video import VideoFileReader, read_frames

    text = tmp_path / "notes.txt"
    text.write_text("not a media file\n" * 50)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for bad in (text, junk):
        with pytest.raises(InputError, match=rf"{bad.name}.*(not an audio or video file|corrupt)"):
            read_audio(bad)
        with pytest.raises(InputError, match=rf"cannot open .*{bad.name}.*Formats that work.*ffprobe"):
            VideoFileReader(bad)
    with pytest.raises(InputError, match=r"ffprobe cannot read .*junk\.mp4"):
        probe(junk)
    missing = tmp_path / "nowhere.mp4"
    for call in (read_audio, AudioFileStream, probe, VideoFileReader, lambda p: read_frames(p, [0])):
        with pytest.raises(InputError, match=r"not found: .*nowhere\.mp4"):
            call(missing)
    with pytest.raises(InputError, match="sample_rate"):
        read_audio(text, sample_rate=0)
    with pytest.raises(InputError, match="fps must be"):
        VideoFileReader(text, fps=-1)
