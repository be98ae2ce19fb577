"""Sources, clock and queues with real threads, real queues and real media files (edge.stream)."""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge.errors import InputError, MissingDependency
from edge.features.audio_pre import resample
from edge.media import read_audio
from edge.stream.clock import MediaClock, MonotonicClock
from edge.stream.microphone import MicrophoneSource, StreamingResampler, list_devices, resolve_device
from edge.stream.queues import AudioQueue, Closed, DropOldestQueue, EndOfStream, Sample
from edge.stream.replay import FileReplaySource
from edge.stream.sources import CameraSource, gstreamer_available, parse_camera_spec

needs_media = pytest.mark.skipif(not all(shutil.which(t) for t in ("ffmpeg", "ffprobe", "espeak-ng")),
                                 reason="needs ffmpeg, ffprobe and espeak-ng (apt-get install ffmpeg espeak-ng)")
CREMA = "crema-d-samples/1001_DFA_HAP_XX.mp4"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 2 s, 25 fps H.264/AAC clip with synthetic speech."""
    if not all(shutil.which(t) for t in ("ffmpeg", "ffprobe", "espeak-ng")):
        pytest.skip("needs ffmpeg, ffprobe and espeak-ng")
    from edge.testmedia import make_clip, synth_speech

    d = tmp_path_factory.mktemp("media")
    wav = synth_speech("the quick brown fox jumps over the lazy dog", d / "speech.wav")
    return make_clip(d / "clip.mp4", seconds=2.0, fps=25.0, audio_wav=wav)


@pytest.fixture(autouse=True)
def no_thread_leaks():
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra:
            return
        time.sleep(0.02)
    pytest.fail(f"threads left running: {extra}")


def _drain(q, out: list) -> threading.Thread:
    def run():
        while True:
            try:
                out.append(q.get(timeout=30))
            except (Closed, queue.Empty):
                return
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def _replay(path, speed="max", fps=16.0, vq_size=4, aq_seconds=1.0, **kw):
    vq, aq = DropOldestQueue(vq_size), AudioQueue(aq_seconds)
    video, audio = [], []
    src = FileReplaySource(path, speed=speed, video_queue=vq, audio_queue=aq, fps=fps, **kw)
    threads = [_drain(vq, video), _drain(aq, audio)]
    t0 = time.monotonic()
    with src:
        for th in threads:
            th.join(30)
        assert src.join(5)
    return src, video, audio, time.monotonic() - t0, vq, aq


# -- clock ------------------------------------------------------------------------------------------------------
def test_media_clock_advances_and_wakes_waiters():
    clock = MediaClock()
    woke = []
    th = threading.Thread(target=lambda: woke.append(clock.wait_until(1.5, timeout=5)))
    th.start()
    clock.advance(1.0)
    clock.advance(0.5)  # never backwards
    assert clock.now() == 1.0
    clock.advance(2.0)
    th.join(5)
    assert woke == [True] and clock.now() == 2.0
    clock.close()
    assert clock.wait_until(10.0, timeout=5) is False  # closed: returns at once
    assert MonotonicClock().now() <= time.monotonic()


# -- queues -----------------------------------------------------------------------------------------------------
def test_drop_oldest_queue_fast_producer_slow_consumer():
    q = DropOldestQueue(5)
    got: list = []

    def consume():
        while True:
            try:
                got.append(q.get(timeout=5))
            except Closed:
                return
            time.sleep(0.002)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(500):
        q.put(i)
    q.close()
    consumer.join(10)
    assert not consumer.is_alive()
    assert q.dropped > 0
    assert len(got) + q.dropped == 500
    assert got == sorted(got) and got[-1] == 499  # the newest survive, in order
    assert q.put_count == 500


def test_queue_close_timeout_and_back_pressure():
    q = DropOldestQueue(2)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    q.put(1)
    q.put(2)
    with pytest.raises(queue.Full):
        q.put(3, block=True, timeout=0.05)  # back-pressure instead of a drop
    assert q.dropped == 0
    waiter = threading.Thread(target=lambda: q.put(3, block=True, timeout=5))
    waiter.start()
    assert q.get() == 1
    waiter.join(5)
    q.close()
    assert [q.get(), q.get()] == [2, 3]  # drained after close
    with pytest.raises(Closed):
        q.get(timeout=1)
    with pytest.raises(Closed):
        q.put(4)
    with pytest.raises(InputError, match="maxsize"):
        DropOldestQueue(0)


def test_audio_queue_overflow_is_counted_and_logged_once_per_burst(caplog):
    q = AudioQueue(0.1)  # 1600 samples at 16 kHz
    chunk = np.ones(512, dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="edge"):
        for i in range(10):
            q.put(Sample(i * 0.032, chunk))
    kept = sum(len(q.get().data) for _ in range(q.qsize()))
    assert kept + q.overflow_samples == 10 * 512  # nothing lost silently
    assert q.overflow_samples == 7 * 512 and q.overflow_seconds == pytest.approx(7 * 512 / 16000)
    assert q.overflow_bursts == 1
    starts = [r for r in caplog.records if "overflow (" in r.getMessage()]
    assert len(starts) == 1
    with caplog.at_level(logging.WARNING, logger="edge"):
        q.put(Sample(1.0, chunk))  # fits: the burst ends with a summary
    assert any("overflow ended" in r.getMessage() for r in caplog.records)
    assert q.overflow_bursts == 1


# -- file replay ------------------------------------------------------------------------------------------------
def _check_replay(path, video, audio, fps=16.0):
    assert isinstance(video[-1], EndOfStream) and video[-1].reason == "end"
    assert isinstance(audio[-1], EndOfStream) and audio[-1].reason == "end"
    frames, chunks = video[:-1], audio[:-1]
    for stream in (frames, chunks):
        ts = [s.t for s in stream]
        assert all(b > a for a, b in zip(ts, ts[1:])), "timestamps must increase"
    assert all(f.data.dtype == np.uint8 and f.data.ndim == 3 and f.data.shape[2] == 3 for f in frames)
    ref, _ = read_audio(path)
    assert np.array_equal(np.concatenate([c.data for c in chunks]), ref)  # every sample, exactly
    duration = len(ref) / 16000
    assert abs(len(frames) - duration * fps) <= 2
    return frames, chunks


@needs_media
def test_replay_max_delivers_everything_identically_twice(clip):
    runs = []
    for _ in range(2):
        src, video, audio, _, vq, aq = _replay(clip, speed="max", vq_size=2, aq_seconds=0.1)
        assert vq.dropped == 0 and aq.overflow_samples == 0  # back-pressure, not drops
        assert src.errors == [] and src.health().state == "ended"
        assert src.clock.now() == pytest.approx(len(read_audio(clip)[0]) / 16000, abs=0.1)
        runs.append(_check_replay(clip, video, audio))
    (f1, c1), (f2, c2) = runs
    assert [f.t for f in f1] == [f.t for f in f2] and [c.t for c in c1] == [c.t for c in c2]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(f1, f2))
    assert f1[0].t == pytest.approx(0.0, abs=0.05)  # media time


@pytest.mark.data
def test_replay_max_on_real_crema_clip(shared_data):
    path = shared_data / CREMA
    if not path.is_file():
        pytest.skip(f"{path} not found")
    src, video, audio, _, _, _ = _replay(path, speed="max")
    frames, _ = _check_replay(path, video, audio)
    assert frames[0].data.shape == (360, 480, 3) and src.errors == []


@needs_media
def test_replay_realtime_paces_and_stamps_wall_time(clip):
    start = time.monotonic()
    src, video, audio, took, _, _ = _replay(clip, speed="realtime", vq_size=64, aq_seconds=10)
    assert took >= 1.8  # a 2 s clip is not replayed faster than real time
    frames, chunks = _check_replay(clip, video, audio)
    assert start <= frames[0].t <= time.monotonic()  # stamped by the monotonic clock


@needs_media
def test_replay_audio_only_file(clip, tmp_path):
    from edge.testmedia import synth_speech

    wav = synth_speech("hello there", tmp_path / "a.wav")
    vq, aq = DropOldestQueue(4), AudioQueue(1.0)
    video, audio = [], []
    threads = [_drain(vq, video), _drain(aq, audio)]
    with FileReplaySource(wav, speed="max", video_queue=vq, audio_queue=aq) as src:
        for th in threads:
            th.join(10)
    assert video == [EndOfStream("replay", "end", None, None)]  # no video stream: ended at once
    assert np.array_equal(np.concatenate([s.data for s in audio[:-1]]), read_audio(wav)[0])
    assert src.errors == []


@needs_media
def test_truncated_file_delivers_what_decodes_then_reports(clip, tmp_path):
    from edge.testmedia import truncate

    bad = truncate(clip, tmp_path / "cut.mp4", 0.5)
    reported = []
    src, video, audio, _, _, _ = _replay(bad, speed="max", on_error=lambda s, e: reported.append(e))
    frames = [s for s in video if isinstance(s, Sample)]
    chunks = [s for s in audio if isinstance(s, Sample)]
    assert 0 < len(frames) < 28 and len(chunks) > 0
    assert src.errors and all(isinstance(e, InputError) for e in src.errors) and reported == src.errors
    ends = [video[-1], audio[-1]]
    assert all(isinstance(e, EndOfStream) for e in ends)
    assert any(e.reason == "error" and isinstance(e.error, InputError) for e in ends)
    assert "truncated" in str(src.errors[0]) or "corrupt" in str(src.errors[0])
    assert src.end.reason == "error"


@needs_media
def test_stop_joins_within_a_second(clip):
    vq, aq = DropOldestQueue(2), AudioQueue(0.2)
    src = FileReplaySource(clip, speed="max", video_queue=vq, audio_queue=aq)  # nobody consumes: blocked on put
    src.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    assert src.stop(timeout=1.0)
    assert time.monotonic() - t0 < 1.0
    assert src.end.reason == "stopped" and vq.closed and aq.closed
    src2 = FileReplaySource(clip, video_queue=DropOldestQueue(2), audio_queue=AudioQueue(1.0))  # realtime
    with src2:
        time.sleep(0.2)
    assert not src2.running and src2.end.reason == "stopped"


def test_replay_rejects_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="speed"):
        FileReplaySource(tmp_path / "x.mp4", speed="fast", video_queue=DropOldestQueue(1))
    with pytest.raises(InputError, match="MediaClock"):
        FileReplaySource(tmp_path / "x.mp4", speed="max", clock=MonotonicClock(), video_queue=DropOldestQueue(1))
    with pytest.raises(InputError, match="not found"):
        FileReplaySource(tmp_path / "x.mp4", video_queue=DropOldestQueue(1))


# -- camera -----------------------------------------------------------------------------------------------------
class FakeCapture:
    """A device that delivers ``good`` frames, then fails (read returns False, or raises)."""

    def __init__(self, good: int, *, raises: bool = False, stall: float = 0.0) -> None:
        self.good, self.raises, self.stall, self.released = good, raises, stall, False

    def read(self):
        if self.good > 0:
            self.good -= 1
            return True, np.zeros((8, 10, 3), dtype=np.uint8) + np.uint8(self.good % 255)
        time.sleep(self.stall)
        if self.raises:
            raise RuntimeError("device unplugged")
        return False, None

    def release(self) -> None:
        self.released = True


def test_camera_reconnects_with_backoff_then_gives_up():
    plan = [FakeCapture(5, raises=True), FakeCapture(5, stall=0.05), None, FakeCapture(3)]
    opened = []

    def opener(spec):
        cap = plan.pop(0) if plan else None  # after the plan: the device is gone for good
        opened.append(cap)
        return cap

    q = DropOldestQueue(100)
    errors = []
    cam = CameraSource(0, clock=MonotonicClock(), queue=q, retry=(0.01, 0.02, 0.04), max_failures=3,
                       opener=opener, on_error=lambda s, e: errors.append(e))
    cam.start()
    assert cam.join(timeout=10), "a failing camera must give up, never hang"
    items = []
    while True:
        try:
            items.append(q.get(timeout=1))
        except Closed:
            break
    frames = [i for i in items if isinstance(i, Sample)]
    assert len(frames) == 13 and frames[0].data.shape == (8, 10, 3)
    assert all(b.t >= a.t for a, b in zip(frames, frames[1:]))
    end = items[-1]
    assert isinstance(end, EndOfStream) and end.reason == "error" and isinstance(end.error, InputError)
    assert errors == [end.error] and "gave up after 3 attempts" in str(end.error)
    h = cam.health()
    assert h.state == "failed" and h.frames == 13 and h.reconnects == 2 and h.failures == 3 + 1 + 3
    assert all(c.released for c in opened if c is not None)


def test_camera_stop_interrupts_backoff():
    q = DropOldestQueue(4)
    cam = CameraSource("0", clock=MonotonicClock(), queue=q, retry=(30.0,), opener=lambda s: FakeCapture(2))
    cam.start()
    time.sleep(0.1)  # two frames, then a failure and a 30 s wait
    t0 = time.monotonic()
    assert cam.stop(timeout=1.0) and time.monotonic() - t0 < 1.0
    assert cam.end.reason == "stopped" and cam.health().frames == 2


@pytest.mark.skipif(bool(list(Path("/dev").glob("video*"))), reason="this machine has a camera")
def test_camera_index_without_camera_is_one_line_error():
    cam = CameraSource("0", clock=MonotonicClock(), queue=DropOldestQueue(2))
    with pytest.raises(InputError, match=r"^no camera at index 0 \(.*\); use --video FILE") as info:
        cam.start()
    assert "\n" not in str(info.value) and not cam.running


def test_csi_camera_needs_gstreamer():
    if gstreamer_available():
        spec = parse_camera_spec("csi://1", size=(640, 480), fps=15)
        assert spec.kind == "csi" and "sensor-id=1" in spec.target and "framerate=15/1" in spec.target
        return
    with pytest.raises(InputError, match="built without GStreamer.*JetPack's OpenCV"):
        CameraSource("csi://0", clock=MonotonicClock(), queue=DropOldestQueue(2))
    with pytest.raises(InputError, match="without GStreamer"):
        parse_camera_spec("videotestsrc ! appsink")


def test_camera_spec_kinds(tmp_path):
    assert parse_camera_spec(0).kind == "index" and parse_camera_spec("2").target == 2
    assert parse_camera_spec("rtsp://cam.local/stream").kind == "url"
    with pytest.raises(InputError, match="not found"):
        parse_camera_spec(str(tmp_path / "missing.mp4"))
    with pytest.raises(InputError, match="csi://N"):
        parse_camera_spec("csi://front")


@needs_media
def test_camera_over_a_file_plays_at_its_pace_and_ends(tmp_path):
    from edge.testmedia import make_clip

    path = make_clip(tmp_path / "short.mp4", seconds=0.6, fps=25.0)
    q = DropOldestQueue(64)
    t0 = time.monotonic()
    with CameraSource(str(path), clock=MonotonicClock(), queue=q) as cam:
        assert cam.join(timeout=5)
    assert time.monotonic() - t0 >= 0.45
    items = [q.get() for _ in range(q.qsize())]
    assert len(items) == 16 and isinstance(items[-1], EndOfStream) and items[-1].reason == "end"
    assert items[0].data.shape == (240, 320, 3) and items[0].data.dtype == np.uint8


# -- microphone -------------------------------------------------------------------------------------------------
def test_streaming_resampler_matches_offline_resample():
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(24_000)).astype(np.float32)
    for rate in (48_000, 44_100, 16_000, 8_000):
        rs, parts, i = StreamingResampler(rate), [], 0
        while i < x.size:
            n = int(rng.integers(1, 1500))
            parts.append(rs.push(x[i:i + n]))
            i += n
        parts.append(rs.flush())
        np.testing.assert_allclose(np.concatenate(parts), resample(x, rate), atol=1e-6)


def test_microphone_without_device_or_portaudio_is_one_line_error():
    try:
        import sounddevice as sd

        has_mic = any(d["max_input_channels"] > 0 for d in sd.query_devices())
    except (ImportError, OSError):  # no package, or no PortAudio library (OSError)
        has_mic = False
    except Exception:  # noqa: BLE001 - PortAudioError: no audio system at all
        has_mic = False
    if has_mic:
        pytest.skip("this machine has a microphone")
    mic = MicrophoneSource(clock=MonotonicClock(), queue=AudioQueue(1.0))
    with pytest.raises((InputError, MissingDependency), match="microphone|sounddevice") as info:
        mic.start()
    assert "\n" not in str(info.value) and not mic.running
    if isinstance(info.value, InputError):
        assert "--audio FILE" in str(info.value)


class FakeSoundDevice:
    """sounddevice's surface for fault injection: devices, a default, and an InputStream fed from a thread."""

    def __init__(self, signal: np.ndarray, rate: int, *, devices=None) -> None:
        self.signal, self.rate = signal, rate
        self.devices = devices if devices is not None else [
            {"name": "HDMI out", "max_input_channels": 0, "default_samplerate": 48000.0},
            {"name": "USB Mic", "max_input_channels": 1, "default_samplerate": float(rate)},
        ]
        self.default = SimpleNamespace(device=(1, 0))
        self.streams = []
        fake = self

        class InputStream:
            def __init__(self, *, device, channels, samplerate, blocksize, dtype, callback):
                self.blocksize, self.callback, self.active = blocksize, callback, False
                self._halt = threading.Event()
                self._thread = threading.Thread(target=self._feed, daemon=True)
                fake.streams.append(self)

            def start(self):
                self.active = True
                self._thread.start()

            def _feed(self):
                sig = fake.signal
                for i in range(0, sig.size, self.blocksize):
                    if self._halt.is_set():
                        return
                    block = sig[i:i + self.blocksize].reshape(-1, 1)
                    flags = SimpleNamespace(input_overflow=i == 0) if i == 0 else None
                    self.callback(block, len(block), None, flags)
                    time.sleep(0.001)
                self.active = False  # the device went away after the signal

            def stop(self):
                self._halt.set()
                if self._thread.is_alive():
                    self._thread.join(2)

            def close(self):
                self.active = False

        self.InputStream = InputStream

    def query_devices(self):
        return self.devices


def test_microphone_resamples_stream_and_gives_up_when_device_vanishes():
    rate = 48_000
    t = np.arange(rate) / rate
    signal = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sd = FakeSoundDevice(signal, rate)
    assert "USB Mic" in list_devices(sd) and "HDMI" not in list_devices(sd)
    with pytest.raises(InputError, match="no audio input device named 'Webcam'.*1: USB Mic"):
        resolve_device(sd, "Webcam")
    q = AudioQueue(5.0)
    mic = MicrophoneSource("usb", clock=MonotonicClock(), queue=q, retry=(0.01,), max_failures=2, backend=sd)
    mic.start()
    sd.devices = []  # unplugged: reopening fails
    assert mic.join(timeout=10)
    items = []
    while True:
        try:
            items.append(q.get(timeout=1))
        except Closed:
            break
    chunks = [i for i in items if isinstance(i, Sample)]
    assert all(len(c.data) == 512 for c in chunks)
    got = np.concatenate([c.data for c in chunks])
    ref = resample(signal, rate)
    assert got.size >= ref.size - 512
    np.testing.assert_allclose(got, ref[: got.size], atol=1e-5)  # continuous across blocks
    ts = [c.t for c in chunks]
    assert all(b > a for a, b in zip(ts, ts[1:]))
    assert mic.input_overflows == 1 and mic.native_rate == rate
    assert items[-1].reason == "error" and "gave up" in str(items[-1].error)


def test_microphone_unknown_index_names_devices():
    sd = FakeSoundDevice(np.zeros(10, np.float32), 44_100)
    with pytest.raises(InputError, match=r"no audio input device with index 7; input devices: 1: USB Mic"):
        MicrophoneSource(7, clock=MonotonicClock(), queue=AudioQueue(1.0), backend=sd).start()
    sd.devices = []
    with pytest.raises(InputError, match="^no microphone found"):
        MicrophoneSource(clock=MonotonicClock(), queue=AudioQueue(1.0), backend=sd).start()
