"""File replay: a video's frames and audio track, or an audio file, delivered as a live source would deliver them
(paced at real time, or as fast as the consumers take them with identical results run to run)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

from edge.errors import InputError
from edge.media import SAMPLE_RATE, AudioFileStream, _existing, probe
from edge.stream.clock import Clock, MediaClock, MonotonicClock
from edge.stream.queues import AudioQueue, DropOldestQueue, Sample
from edge.video import VideoFileReader

from edge.stream.sources import ErrorCallback, Source

log = logging.getLogger("edge")


SPEEDS = ("realtime", "max")


class FileReplaySource(Source):
    """Replay a file's frames (resampled to ``fps``) and audio track, or an audio-only file, from ONE thread.

    Items: ``Sample(t, rgb uint8 (H, W, 3))`` into ``video_queue`` and ``Sample(t, float32 mono 16 kHz chunk of
    ``audio_chunk`` samples)`` into ``audio_queue`` (either may be None to skip that stream; a stream the file lacks
    ends at once with ``EndOfStream("end")``).  Samples are delivered in the order they would arrive live: a
    frame at its timestamp, an audio chunk when its last sample is due; ties go to audio.

    ``speed="realtime"`` (default) paces delivery with wall time: ``t = t0 + media time`` from ``clock`` (a
    :class:`MonotonicClock` unless given), and puts never block (video may drop, audio overflows are counted).
    ``speed="max"`` delivers as fast as the consumers take it: ``t`` is media time, the :class:`MediaClock` is
    advanced as samples are delivered (and closed at the end), and puts *block* when a queue is full
    (back-pressure), so nothing is dropped and two runs deliver identical items.

    A truncated or corrupt file delivers every frame and chunk that decodes, then reports the
    :class:`InputError` and ends its queues with ``EndOfStream("error", error)``.
    """

    def __init__(self, path: str | Path, *, speed: str = "realtime", clock: Clock | None = None,
                 video_queue: DropOldestQueue | None = None, audio_queue: AudioQueue | None = None,
                 fps: float | None = 16.0, audio_chunk: int = 512, on_error: ErrorCallback | None = None,
                 name: str = "replay") -> None:
        if speed not in SPEEDS:
            raise InputError(f"speed must be one of {', '.join(SPEEDS)}, got {speed!r}")
        if clock is None:
            clock = MediaClock() if speed == "max" else MonotonicClock()
        if (speed == "max") != isinstance(clock, MediaClock):
            raise InputError("speed='max' stamps samples with media time and needs a MediaClock; speed='realtime' "
                             "needs a wall clock such as MonotonicClock (or pass no clock)")
        if video_queue is None and audio_queue is None:
            raise InputError("FileReplaySource needs a video_queue, an audio_queue or both")
        super().__init__(name, clock=clock, on_error=on_error)
        self.path = _existing(path)
        self.speed = speed
        self.video_queue, self.audio_queue = video_queue, audio_queue
        self.audio_chunk = audio_chunk
        info = probe(self.path)
        self.has_video = bool(info["has_video"]) and video_queue is not None
        self.has_audio = bool(info["has_audio"]) and audio_queue is not None
        if not (self.has_video or self.has_audio):
            wanted = " and ".join(k for k, q in (("video", video_queue), ("audio", audio_queue)) if q is not None)
            raise InputError(f"{str(self.path)!r} has no {wanted} stream to replay")
        for kind, q, has in (("video", video_queue, self.has_video), ("audio", audio_queue, self.has_audio)):
            if q is not None and not has:
                log.info("%s has no %s stream; replaying without it", self.path, kind)
        self._reader = VideoFileReader(self.path, fps=fps) if self.has_video else None
        self._frames: Iterator[tuple[float, Any]] | None = None
        self._audio: AudioFileStream | None = None
        self._stream_error: dict[str, InputError] = {}

    def _queues(self) -> Sequence[Any]:
        return tuple(q for q in (self.video_queue, self.audio_queue) if q is not None)

    def _open(self) -> None:
        if self._reader is not None:
            self._frames = iter(self._reader)
        if self.has_audio:
            self._audio = AudioFileStream(self.path, chunk=self.audio_chunk)

    def _close(self) -> None:
        frames, self._frames = self._frames, None
        if frames is not None and hasattr(frames, "close"):
            frames.close()
        audio, self._audio = self._audio, None
        if audio is not None:
            audio.close()

    def _next(self, kind: str) -> tuple[float, float, Any] | None:
        """(due media time, media time, data) of the next item of stream ``kind``; None at its end."""
        it = self._frames if kind == "video" else self._audio
        try:
            t, data = next(it)  # type: ignore[arg-type]
        except StopIteration:
            return None
        except InputError as exc:  # truncated or corrupt: what decoded was delivered
            self._stream_error[kind] = exc
            self._report(exc)
            return None
        due = t + (len(data) / SAMPLE_RATE if kind == "audio" else 0.0)
        return due, t, data

    def _run(self) -> str:
        block = self.speed == "max"
        queues = {"video": self.video_queue, "audio": self.audio_queue}
        live = {"video": self.has_video, "audio": self.has_audio}
        for kind, q in queues.items():
            if not live[kind]:
                self._end_queue(q, "end", None)
        pending = {kind: item for kind in ("audio", "video") if live[kind] and (item := self._next(kind))}
        t0 = self.clock.now() if not block else 0.0
        while pending:
            self._check_stop()
            kind = min(pending, key=lambda k: (pending[k][0], k))
            due, t, data = pending[kind]
            if not block:
                self._sleep(t0 + due - self.clock.now())
            self._deliver(queues[kind], Sample(t0 + t, data), block=block)
            if kind == "video":
                self.frames += 1
            else:
                self.audio_samples += len(data)
            if isinstance(self.clock, MediaClock):
                self.clock.advance(due)
            item = self._next(kind)
            if item is None:
                del pending[kind]
                error = self._stream_error.get(kind)
                self._end_queue(queues[kind], "error" if error else "end", error)
            else:
                pending[kind] = item
        return "end"
