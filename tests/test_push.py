"""The push source: real JPEGs decoded by OpenCV, real PCM16, the live loop's real queues, its thread and its end."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install opencv-python-headless)")

from edge.stream.push import ClientClock, FrameRefused, PushSource, jpeg_size  # noqa: E402
from edge.stream.queues import AudioQueue, DropOldestQueue, EndOfStream  # noqa: E402
from edge.stream.rings import AudioRing  # noqa: E402


class FakeClock:
    """A clock the test moves by hand, so arrival times are exact (the source reads it; nothing else is faked)."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def wait_until(self, t: float, timeout: float | None = None) -> bool:
        return self.t >= t


def _jpeg(width: int = 64, height: int = 48, value: int = 120) -> bytes:
    img = np.full((height, width, 3), value, np.uint8)
    img[:, : width // 2, 0] = 255  # red in RGB: checks the colour order after decoding
    ok, data = cv2.imencode(".jpg", img[..., ::-1])
    assert ok
    return data.tobytes()


def _pcm(n: int, value: int = 1000) -> bytes:
    return np.full(n, value, "<i2").tobytes()


@pytest.fixture()
def push():
    clock = FakeClock()
    video, audio = DropOldestQueue(8), AudioQueue(30.0)
    source = PushSource(clock=clock, video_queue=video, audio_queue=audio, max_fps=16.0)
    source.start()
    yield source, clock, video, audio
    source.stop()


def test_jpeg_size_reads_the_frame_header_of_real_jpegs():
    for w, h in ((64, 48), (640, 480), (17, 1031)):
        assert jpeg_size(_jpeg(w, h)) == (w, h)
    ok, progressive = cv2.imencode(".jpg", np.zeros((30, 40, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert jpeg_size(progressive.tobytes()) == (40, 30)
    assert jpeg_size(b"\xff\xd8\xff\xd9") is None
    assert jpeg_size(_jpeg()[:20]) is None


def test_frames_are_decoded_to_rgb_and_stamped_on_the_server_clock(push):
    source, clock, video, _ = push
    clock.t = 100.0
    assert source.push_video(5.0, _jpeg())  # the first sample anchors: offset = 100 - 5
    clock.t = 100.2
    assert source.push_video(5.1, _jpeg())  # arrived 0.1 s after it was captured: stamped at its capture time
    first, second = video.get_nowait(), video.get_nowait()
    assert first.t == pytest.approx(100.0) and second.t == pytest.approx(100.1)
    assert first.data.shape == (48, 64, 3) and first.data.dtype == np.uint8
    assert first.data[0, 0, 0] > 200 and first.data[0, -1, 0] < 160  # red on the left, in RGB order
    assert source.client_clock.to_client(100.1) == pytest.approx(5.1)
    assert source.clock_adjustments == 0


def test_a_sample_never_maps_into_the_future_and_the_offset_only_goes_down(push):
    source, clock, video, audio = push
    clock.t = 50.0
    source.push_audio(0.0, _pcm(1600))  # 0.1 s chunk arriving at 50.0: its end maps to 50.0, its start to 49.9
    assert audio.get_nowait().t == pytest.approx(49.9)
    clock.t = 50.05
    source.push_audio(0.1, _pcm(1600))  # would end at 50.1 > arrival: the offset is lowered by 0.05
    assert audio.get_nowait().t == pytest.approx(50.05 - 0.1)
    assert source.clock_adjustments == 1
    clock.t = 60.0
    source.push_video(0.3, _jpeg())  # a late arrival keeps the (lower) offset: stamped at its capture time
    assert video.get_nowait().t == pytest.approx(0.3 + 49.85)
    assert source.clock_adjustments == 1


def test_out_of_order_frames_and_audio_are_refused_and_counted(push):
    source, clock, video, audio = push
    assert source.push_video(1.0, _jpeg())
    for t in (1.0, 0.5):
        with pytest.raises(FrameRefused, match="not later than the previous frame") as info:
            source.push_video(t, _jpeg())
        assert info.value.kind == "video" and info.value.reason == "out_of_order"
    source.push_audio(0.0, _pcm(1600))
    source.push_audio(0.0995, _pcm(1600))  # 0.5 ms of overlap: clock rounding, accepted
    with pytest.raises(FrameRefused, match="starts before the previous chunk ended") as info:
        source.push_audio(0.15, _pcm(160))
    assert info.value.reason == "out_of_order"
    source.push_audio(0.5, _pcm(160))  # a gap is lost audio, not an error
    assert (source.frames_refused, source.audio_refused) == (2, 1)
    assert len(video) == 1 and len(audio) == 3


def test_frames_faster_than_the_rate_are_dropped_and_counted(push):
    source, *_ = push
    accepted = [source.push_video(i / 32, _jpeg()) for i in range(32)]  # 32 fps for one second, limit 16
    assert sum(accepted) == 16 and source.frames_rate_limited == 16


@pytest.mark.parametrize("payload, reason, match", [
    (b"GIF89a....", "bad_payload", "not a JPEG"),
    (_jpeg()[:200], "bad_payload", "does not decode|no readable frame header"),
    (b"\xff\xd8\xff\xc0\x00\x11\x08\x30\x00\x30\x00" + b"\x00" * 64, "too_large", "outside 1..4096"),
])
def test_bad_images_are_refused_with_a_reason(push, payload, reason, match):
    source, *_ = push
    with pytest.raises(FrameRefused, match=match) as info:
        source.push_video(1.0, payload)
    assert info.value.reason == reason and source.frames_refused == 1


def test_bad_audio_is_refused_with_a_reason(push):
    source, *_ = push
    for payload, reason in ((b"", "bad_payload"), (b"\x00\x01\x02", "bad_payload"), (_pcm(16_001), "too_large")):
        with pytest.raises(FrameRefused) as info:
            source.push_audio(0.0, payload)
        assert info.value.reason == reason
    with pytest.raises(FrameRefused, match="finite") as info:
        source.push_audio(float("nan"), _pcm(10))
    assert info.value.reason == "bad_time"


def test_a_disabled_modality_is_refused():
    source = PushSource(clock=FakeClock(), audio_queue=AudioQueue(5.0))
    assert not source.has_video
    with pytest.raises(FrameRefused, match="not among this stream's modalities") as info:
        source.push_video(0.0, _jpeg())
    assert info.value.reason == "disabled"


def test_end_input_ends_the_queues_after_what_was_pushed(push):
    source, clock, video, audio = push
    source.push_video(0.0, _jpeg())
    source.push_audio(0.0, _pcm(320))
    source.end_input()
    assert source.finished.wait(2.0)
    assert not video.get_nowait()[1] is None
    assert isinstance(video.get_nowait(), EndOfStream)
    audio.get_nowait()
    end = audio.get_nowait()
    assert isinstance(end, EndOfStream) and end.reason == "end"
    with pytest.raises(FrameRefused, match="ended"):
        source.push_audio(1.0, _pcm(10))


def test_the_client_clock_alone():
    c = ClientClock()
    assert c.to_client(10.0) is None
    assert c.map(1.0, duration=0.0, arrival=11.0) == 11.0
    assert c.map(2.0, duration=0.5, arrival=12.0) == pytest.approx(11.5)  # end 2.5 would map to 12.5 > 12.0
    assert c.adjustments == 1 and c.to_client(11.5) == pytest.approx(2.0)


def test_a_long_audio_gap_keeps_time_without_allocating_the_silence():
    ring = AudioRing(2.0)
    ring.push(0.0, np.ones(1600, np.float32))
    ring.push(3600.0, np.ones(1600, np.float32))  # an hour later: only the ring's capacity of silence is written
    assert ring.gap_samples == 3600 * 16000 - 1600
    assert ring.index_at(3600.0) == 3600 * 16000
    assert ring.watermark == pytest.approx(3600.1)
    assert ring.window(3600.1, 0.1).min() == 1.0 and ring.window(3600.0, 1.0).max() == 0.0
