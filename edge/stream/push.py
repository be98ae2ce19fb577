"""A push source: media that a program hands over (JPEG frames, PCM16 audio), fed to the live loop's queues.

Capture sources read a device in a thread of their own; a :class:`PushSource` is fed instead: a WebSocket session
(``edge-serve``) or any program calls :meth:`PushSource.push_video` and :meth:`PushSource.push_audio` with media
captured on *its* clock, and the samples land in the same :class:`~edge.stream.queues.DropOldestQueue` /
:class:`~edge.stream.queues.AudioQueue` the camera and microphone feed, stamped on the run's monotonic clock.

Clock rule (:class:`ClientClock`; ``docs/protocol.md`` repeats it):

* A sample is stamped ``t_server = t_client + offset``.  Both streams share one offset, so the sender's own
  alignment of audio and video is kept exactly.
* A sample cannot have been captured after it arrived: the *end* of each sample (a frame's time, an audio chunk's
  time plus its duration) must not map later than its arrival on the server clock.  The first sample sets
  ``offset = arrival - end``; a later sample that would map into the future lowers the offset to its own
  ``arrival - end`` (the sender's clock runs fast, or the first sample was held up on the way).  The offset is
  lowered, never raised, so it settles on the least-delayed sample; each lowering is counted
  (``clock_adjustments``).
* Per stream, client times must move forward: a frame not later than the previous accepted frame, or an audio
  chunk starting more than :data:`AUDIO_OVERLAP_S` before the previous chunk ended, is refused
  (:class:`FrameRefused`, reason ``out_of_order``) and counted.  A gap in audio is lost audio: the audio ring fills
  it with silence, as it does for a microphone that stalls.
* Frames closer together than ``0.75 / max_fps`` seconds of client time are dropped and counted
  (``frames_rate_limited``): at most ``max_fps`` frames per second reach the vision stage.

Nothing is stored: decoded frames and samples go to the queues and nowhere else.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Sequence

import numpy as np

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.stream.clock import Clock, MonotonicClock
from edge.stream.queues import AudioQueue, Closed, DropOldestQueue, Sample
from edge.stream.sources import ErrorCallback, Source

log = logging.getLogger("edge")

#: Audio the sender may repeat at a chunk boundary without it counting as out of order (rounding of its clock).
AUDIO_OVERLAP_S = 0.001
#: Defaults of the limits (the WebSocket protocol's, documented in docs/protocol.md).
MAX_FPS = 16.0
MAX_AUDIO_S = 1.0
MAX_IMAGE_BYTES = 2 * 1024 * 1024
MAX_IMAGE_SIDE = 4096
SAMPLE_RATE = 16_000
_JPEG_MAGIC = b"\xff\xd8\xff"
#: JPEG start-of-frame markers (C0-CF except DHT C4, JPG C8 and DAC CC): their segment holds the image size.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class FrameRefused(InputError):
    """A pushed frame or chunk was refused; ``kind`` is ``"video"`` or ``"audio"``, ``reason`` one of
    ``out_of_order``, ``too_large``, ``bad_payload``, ``bad_time``, ``disabled``, ``ended``."""

    def __init__(self, kind: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.reason = kind, reason


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment without decoding it; None when none is found."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before it
            return None
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _SOF:
            if i + 9 > n or length < 7:
                return None
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return width, height
        i += 2 + length
    return None


class ClientClock:
    """Maps a sender's capture times onto the run's clock (the rule is in this module's docstring). Thread-safe."""

    def __init__(self) -> None:
        self.offset: float | None = None
        self.adjustments = 0
        self._lock = threading.Lock()

    def map(self, t_client: float, *, duration: float, arrival: float) -> float:
        """Server time of a sample captured at ``t_client`` lasting ``duration`` s that arrived at ``arrival``."""
        with self._lock:
            bound = arrival - (t_client + duration)
            if self.offset is None:
                self.offset = bound
            elif bound < self.offset:
                self.offset = bound
                self.adjustments += 1
            return t_client + self.offset

    def to_client(self, t_server: float) -> float | None:
        """The sender's clock at server time ``t_server`` (None before the first sample)."""
        with self._lock:
            return None if self.offset is None else t_server - self.offset


class PushSource(Source):
    """Media pushed by a caller: JPEG frames into ``video_queue``, PCM s16le mono 16 kHz into ``audio_queue``.

    Either queue may be None (that modality is off: its pushes are refused with reason ``disabled``).  The push
    methods are thread-safe; each stream's pushes should come from one caller in capture order.  :meth:`end_input`
    says no more media will come: the queues get their :class:`~edge.stream.queues.EndOfStream` after what was
    pushed, and the live loop makes its last estimate.  Limits: ``max_fps`` frames per second of client time,
    ``max_audio_s`` seconds per chunk, ``max_image_bytes`` per JPEG, ``max_side`` pixels per image side.
    """

    def __init__(self, *, clock: Clock | None = None, video_queue: DropOldestQueue | None = None,
                 audio_queue: AudioQueue | None = None, max_fps: float = MAX_FPS, max_audio_s: float = MAX_AUDIO_S,
                 max_image_bytes: int = MAX_IMAGE_BYTES, max_side: int = MAX_IMAGE_SIDE,
                 sample_rate: int = SAMPLE_RATE, on_error: ErrorCallback | None = None, name: str = "push") -> None:
        if video_queue is None and audio_queue is None:
            raise InputError("PushSource needs a video_queue, an audio_queue or both")
        for label, value in (("max_fps", max_fps), ("max_audio_s", max_audio_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InputError(f"{label} must be a positive number, got {value!r}")
        super().__init__(name, clock=clock or MonotonicClock(), on_error=on_error)
        self.video_queue, self.audio_queue = video_queue, audio_queue
        self.max_fps, self.max_audio_s = float(max_fps), float(max_audio_s)
        self.max_image_bytes, self.max_side, self.sample_rate = int(max_image_bytes), int(max_side), int(sample_rate)
        self.client_clock = ClientClock()
        self.frames_rate_limited = self.frames_refused = self.audio_refused = 0
        self._last_frame: float | None = None  # client time of the last accepted frame
        self._audio_end: float | None = None  # client time at which the last accepted chunk ended
        self._video_lock, self._audio_lock = threading.Lock(), threading.Lock()
        self._no_more = threading.Event()

    @property
    def has_video(self) -> bool:
        return self.video_queue is not None

    @property
    def clock_adjustments(self) -> int:
        return self.client_clock.adjustments

    # -- Source ---------------------------------------------------------------------------------------------------
    def _queues(self) -> Sequence[Any]:
        return tuple(q for q in (self.video_queue, self.audio_queue) if q is not None)

    def _run(self) -> str:
        while not self._no_more.wait(0.1):
            self._check_stop()
        return "end"

    def end_input(self) -> None:
        """No more media: what was pushed is processed, then the queues end (idempotent)."""
        self._no_more.set()

    # -- pushes ---------------------------------------------------------------------------------------------------
    def _refuse(self, kind: str, reason: str, message: str) -> FrameRefused:
        if kind == "video":
            self.frames_refused += 1
        else:
            self.audio_refused += 1
        return FrameRefused(kind, reason, message)

    def _check_open(self, kind: str, q: Any, t_client: float) -> None:
        if q is None:
            raise self._refuse(kind, "disabled", f"{'vision' if kind == 'video' else 'audio'} is not among this "
                                                 f"stream's modalities; leave {kind} out or enable it")
        if self._no_more.is_set() or self.finished.is_set():
            raise self._refuse(kind, "ended", "the stream has ended; no more media is taken")
        if not math.isfinite(t_client):
            raise self._refuse(kind, "bad_time", f"capture time {t_client!r} is not a finite number of seconds")

    def push_video(self, t_client: float, jpeg: bytes) -> bool:
        """Decode one complete JPEG captured at ``t_client`` (seconds, the sender's clock) and queue it.

        Returns False when the frame came too soon after the previous one (dropped, counted); raises
        :class:`FrameRefused` for a frame that is out of order, too large, or not a decodable JPEG."""
        arrival = self.clock.now()
        with self._video_lock:
            self._check_open("video", self.video_queue, t_client)
            if len(jpeg) > self.max_image_bytes:
                raise self._refuse("video", "too_large", f"a JPEG of {len(jpeg)} bytes is over the limit of "
                                                         f"{self.max_image_bytes} bytes; send smaller frames "
                                                         f"(640 x 480 at quality 0.8 is about 50 kB)")
            last = self._last_frame
            if last is not None and t_client <= last:
                raise self._refuse("video", "out_of_order", f"frame at {t_client:.6f} s is not later than the "
                                                            f"previous frame ({last:.6f} s); send frames in "
                                                            f"capture order with increasing times")
            if last is not None and t_client - last < 0.75 / self.max_fps:
                self.frames_rate_limited += 1
                return False
            rgb = self._decode(jpeg)
            self._last_frame = t_client
            t = self.client_clock.map(t_client, duration=0.0, arrival=arrival)
            self._put(self.video_queue, Sample(t, rgb), "video")
            self.frames += 1
            return True

    def _decode(self, jpeg: bytes) -> np.ndarray:
        if not jpeg.startswith(_JPEG_MAGIC):
            raise self._refuse("video", "bad_payload", "the payload is not a JPEG (it must start with FF D8 FF); "
                                                       "send one complete JPEG per message")
        size = jpeg_size(jpeg)
        if size is None:
            raise self._refuse("video", "bad_payload", "the JPEG has no readable frame header (truncated or "
                                                       "corrupt); send one complete JPEG per message")
        if max(size) > self.max_side or min(size) < 1:
            raise self._refuse("video", "too_large" if max(size) > self.max_side else "bad_payload",
                               f"a {size[0]} x {size[1]} image is outside 1..{self.max_side} pixels per side; "
                               f"scale frames down (640 x 480 is plenty)")
        cv2 = lazy_import("cv2", purpose="decoding JPEG frames")
        bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.ndim != 3:
            raise self._refuse("video", "bad_payload", "the JPEG does not decode (truncated or corrupt); send one "
                                                       "complete JPEG per message")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def push_audio(self, t_client: float, pcm16: bytes) -> None:
        """Queue one chunk of PCM s16le mono audio at ``sample_rate`` whose first sample was captured at
        ``t_client`` (seconds, the sender's clock); :class:`FrameRefused` for an empty, odd-length, too long or
        out-of-order chunk."""
        arrival = self.clock.now()
        with self._audio_lock:
            self._check_open("audio", self.audio_queue, t_client)
            n = len(pcm16)
            limit = int(round(self.max_audio_s * self.sample_rate))
            if n == 0 or n % 2:
                raise self._refuse("audio", "bad_payload", f"audio payload of {n} bytes: PCM s16le holds 2 bytes "
                                                           f"per sample, at least one sample")
            if n // 2 > limit:
                raise self._refuse("audio", "too_large", f"{n // 2} samples is more than {self.max_audio_s:g} s at "
                                                         f"{self.sample_rate} Hz ({limit} samples); send shorter "
                                                         f"chunks (100 ms is usual)")
            duration = n / 2 / self.sample_rate
            end = self._audio_end
            if end is not None and t_client < end - AUDIO_OVERLAP_S:
                raise self._refuse("audio", "out_of_order", f"chunk at {t_client:.6f} s starts before the previous "
                                                            f"chunk ended ({end:.6f} s); send audio in order")
            samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / np.float32(32768.0)
            self._audio_end = t_client + duration
            t = self.client_clock.map(t_client, duration=duration, arrival=arrival)
            self._put(self.audio_queue, Sample(t, samples), "audio")
            self.audio_samples += samples.size

    def _put(self, q: Any, sample: Sample, kind: str) -> None:
        try:
            q.put(sample)
        except Closed:
            raise self._refuse(kind, "ended", "the stream has ended; no more media is taken") from None
        self._last_t = sample.t

    def stats(self) -> dict[str, int]:
        """Counters for reports: accepted, refused and rate-limited media, clock adjustments."""
        return {"frames": self.frames, "frames_rate_limited": self.frames_rate_limited,
                "frames_refused": self.frames_refused, "audio_samples": self.audio_samples,
                "audio_refused": self.audio_refused, "clock_adjustments": self.clock_adjustments}
