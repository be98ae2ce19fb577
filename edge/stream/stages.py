"""The live loop's stages, each in its own thread, fed by bounded queues.

- :class:`VisionStage`: frames -> face detection + alignment -> encoder -> a timestamped ring of embeddings
  (frames without a face are marked, not invented).  With ``detect_every`` > 1 the face found on one frame is
  tracked: the next N - 1 frames are aligned with its landmarks (faces move little in 1/16 s) and detection runs
  again every N frames, the main cost saver on a CPU.
- :class:`AudioStage`: audio chunks -> the audio ring, voice activity detection -> speech segments for ASR.
- :class:`ASRStage`: speech segments -> transcripts (final, and partial on request).

Each stage keeps a *watermark*: the capture time up to which it has processed its input.  The fusion scheduler
uses the watermarks to make ``--speed max`` replays deterministic (a tick at media time T waits until every
stage has processed everything up to T); live runs never wait.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edge.stream.queues import Closed, EndOfStream
from edge.stream.rings import AudioRing, FrameEntry, FrameRing

log = logging.getLogger("edge")
POLL_S = 0.05


class Stage:
    """A worker thread over one input queue; subclasses implement :meth:`handle` and may override :meth:`finish`."""

    name = "stage"

    def __init__(self, inbox: Any) -> None:
        self.inbox = inbox
        self.watermark = float("-inf")
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.busy_s = 0.0
        self.items = 0
        #: where failures go (set by the recognizer); without one a failure stops the stage with a log line
        self.reporter: Any = None
        self.failed = False
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"edge-{self.name}", daemon=True)

    def start(self) -> "Stage":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _main(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item = self.inbox.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                except Closed:
                    break
                if isinstance(item, EndOfStream):
                    break
                if self.failed:  # down for good: drain the input so the rest of the loop goes on
                    self.skip(item)
                    continue
                started = time.perf_counter()
                try:
                    self.handle(item)
                except Exception as exc:  # reported at once; restarted or drained, never silent
                    self.busy_s += time.perf_counter() - started
                    self._failed(item, exc)
                    continue
                self.busy_s += time.perf_counter() - started
                self.items += 1
                if self.reporter is not None:
                    self.reporter.recovered(self.name)
        except BaseException as exc:  # a bug outside handle(): still reported, never silent
            log.exception("%s stage failed", self.name)
            self.error = exc
            if self.reporter is not None:
                self.reporter.report(self.name, exc, restartable=False)
        finally:
            try:
                self.finish()
            finally:
                self.watermark = float("inf")
                self.done.set()

    def _failed(self, item: Any, exc: Exception) -> None:
        self.error = exc
        self.skip(item)
        if self.reporter is None:
            log.error("%s stage failed: %s: %s", self.name, type(exc).__name__, exc)
            self.failed = True
            return
        if self.reporter.report(self.name, exc, media_time=self.watermark if self.watermark > -1e300 else None):
            self._stop.wait(self.reporter.backoff(self.name))
            self.restarts += 1
            self.reset()
        else:
            self.failed = True

    def handle(self, item: Any) -> None:
        raise NotImplementedError

    def skip(self, item: Any) -> None:
        """An item not processed (the stage is down, or it failed on it): only the watermark moves on."""

    def reset(self) -> None:
        """Before a restart: drop whatever state the failure may have left half-updated."""

    def finish(self) -> None:
        """Called once at the end of the input (or on stop)."""


class VisionStage(Stage):
    name = "vision"

    def __init__(self, inbox: Any, extractors: Any, ring: FrameRing, *, detect_every: int = 1) -> None:
        super().__init__(inbox)
        self.extractors, self.ring = extractors, ring
        self.detect_every = max(1, int(detect_every))
        self._since_detect = 0
        self._track: Any = None  # the last detection (FaceCrop) reused while tracking
        self.faces = self.frames = 0
        self.latest_box: tuple[float, float, float, float] | None = None
        self.latest_frame: np.ndarray | None = None

    def _aligned(self, rgb: np.ndarray) -> tuple[np.ndarray | None, tuple | None, float]:
        if self._track is not None and self._since_detect < self.detect_every:
            from edge.features.align import align_face

            self._since_detect += 1
            track = self._track
            vision = self.extractors.profile.vision
            return align_face(rgb, track.landmarks, vision.face_size, kind=vision.align), track.box, track.score
        crop = self.extractors.face(rgb)
        self._since_detect = 1
        self._track = crop if self.detect_every > 1 and crop.aligned is not None else None
        return crop.aligned, crop.box, crop.score

    def handle(self, item: Any) -> None:
        t, rgb = item
        aligned, box, score = self._aligned(rgb)
        feature = None if aligned is None else self.extractors.face_features(aligned[None])[0]
        self.frames += 1
        self.faces += aligned is not None
        self.latest_box, self.latest_frame = box, rgb
        self.ring.push(FrameEntry(t, feature, box, score))
        self.watermark = t

    def skip(self, item: Any) -> None:
        self.watermark = max(self.watermark, item[0])

    def reset(self) -> None:
        self._track, self._since_detect = None, 0


@dataclass
class SpeechSegment:
    start: float
    end: float
    audio: np.ndarray
    known_at: float = float("-inf")
    final: bool = True


class AudioStage(Stage):
    """Audio into the ring and through VAD; finished speech segments go to ``asr_queue``.

    Every VAD event is stamped with the capture time at which it became known (the end of the chunk that
    revealed it), so a tick at time T can use exactly what was known by T, whatever the thread timing.
    """

    name = "audio"

    def __init__(self, inbox: Any, ring: AudioRing, segmenter: Any | None, asr_queue: "queue.Queue | None",
                 *, partial_s: float = 0.0) -> None:
        super().__init__(inbox)
        self.ring, self.segmenter, self.asr_queue = ring, segmenter, asr_queue
        self.partial_s = partial_s
        self._last_partial = float("-inf")
        # speech segments as [start, known_start, end or None, known_end or None], in order
        self.speech: list[list[Any]] = []
        self.segments_known: list[float] = []  # known_at of each segment sent to ASR, in order
        self._lock = threading.Lock()
        self._now = float("-inf")

    def handle(self, item: Any) -> None:
        t, chunk = item
        self.ring.push(t, chunk)
        self._now = t + len(chunk) / self.ring.rate
        if self.segmenter is not None:
            for event in self.segmenter.push(chunk, t):
                self._event(event)
            self._maybe_partial()
        self.watermark = self._now

    def skip(self, item: Any) -> None:
        t, chunk = item
        self._now = max(self._now, t + len(chunk) / self.ring.rate)
        self.watermark = self._now

    def reset(self) -> None:
        if self.segmenter is not None and hasattr(self.segmenter, "reset"):
            self.segmenter.reset()

    def _maybe_partial(self) -> None:
        """Every ``partial_s`` seconds of ongoing speech, send the speech so far for a partial transcript."""
        if not self.partial_s or self.asr_queue is None or not self.speech or self.speech[-1][2] is not None:
            return
        start = self.speech[-1][0]
        if self._now - max(start, self._last_partial) < self.partial_s:
            return
        first, stop = self.ring.index_at(start), self.ring.index_at(self._now)
        audio = self.ring.samples(first, stop)
        self._last_partial = self._now
        with self._lock:
            self.segments_known.append(self._now)
        self.asr_queue.put(SpeechSegment(start, self._now, audio, known_at=self._now, final=False))

    def _event(self, event: Any) -> None:
        kind = type(event).__name__
        with self._lock:
            if kind == "SpeechStart":
                self.speech.append([float(event.t), self._now, None, None])
            elif kind == "SpeechEnd":
                if not self.speech or self.speech[-1][2] is not None:  # an end without a start: start it now
                    self.speech.append([float(getattr(event, "start", event.t)), self._now, None, None])
                segment = self.speech[-1]
                segment[2], segment[3] = float(event.t), self._now
                self._last_partial = float("-inf")
                del self.speech[:-256]
                if self.asr_queue is not None:
                    self.segments_known.append(self._now)
                    self.asr_queue.put(SpeechSegment(segment[0], segment[2], np.asarray(event.audio, np.float32),
                                                     known_at=self._now))

    def finish(self) -> None:
        if self.segmenter is not None:
            for event in self.segmenter.flush():
                self._event(event)
        if self.asr_queue is not None:
            self.asr_queue.put(EndOfStream("audio"))  # the ASR stage ends after the last segment

    def _as_known(self, known_by: float) -> list[tuple[float, float]]:
        """Speech intervals as they were known at ``known_by`` (ongoing speech ends at ``known_by``)."""
        out = []
        for start, known_start, end, known_end in self.speech:
            if known_start > known_by:
                continue
            out.append((start, end if end is not None and known_end <= known_by else known_by))
        return out

    def speech_in(self, t0: float, t1: float, *, known_by: float) -> bool:
        """Was speech known by ``known_by`` to lie in (t0, t1]?"""
        with self._lock:
            return any(s < t1 and e > t0 for s, e in self._as_known(known_by))

    def last_speech(self, known_by: float) -> float | None:
        """End of the newest speech known by ``known_by`` (``known_by`` itself while speech goes on)."""
        with self._lock:
            ends = [e for _, e in self._as_known(known_by)]
            return max(ends) if ends else None

    def segments_known_by(self, t: float) -> int:
        with self._lock:
            return sum(1 for k in self.segments_known if k <= t)


@dataclass
class TranscriptSpan:
    """A transcript of the speech from ``start`` to ``end`` (capture seconds), as the fusion reads it: ``final`` or
    partial (speech still going on), the compute it took, and the capture time by which it is known."""

    start: float
    end: float
    text: str
    final: bool
    seconds: float
    known_at: float


class ASRStage(Stage):
    """Speech segments -> transcripts, kept in order of their end time.

    Finals go through ``asr.transcribe``, partials through ``asr.partial`` (a backend may make those cheaper).  With
    ``skip_stale_partials`` (live runs), a partial is dropped when more speech already waits in the queue: the ASR
    is behind, and the newer item makes it stale (``partials_skipped`` counts them).  Replays at ``--speed max``
    keep every partial, so their results do not depend on thread timing.  With a capture ``clock`` (live runs),
    ``final_latency_s`` records, per final transcript, the seconds from the end of its speech to the transcript.
    """

    name = "asr"

    def __init__(self, inbox: "queue.Queue", asr: Any, *, skip_stale_partials: bool = False,
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(inbox)
        self.clock = clock
        self.final_latency_s: list[float] = []
        self.asr = asr
        self.skip_stale_partials = skip_stale_partials
        self.transcripts: list[TranscriptSpan] = []
        self._lock = threading.Lock()
        self.pending = 0
        self.lost = 0  # segments not transcribed because the ASR failed
        self.partials_skipped = 0

    def handle(self, item: SpeechSegment) -> None:
        if not item.final and self.skip_stale_partials and self.inbox.qsize() > 0:
            self.partials_skipped += 1
            self.watermark = item.end
            return
        started = time.perf_counter()
        result = self.asr.transcribe(item.audio) if item.final else self.asr.partial(item.audio)
        text = (getattr(result, "text", result) or "").strip()
        with self._lock:
            self.transcripts.append(TranscriptSpan(item.start, item.end, text, item.final, time.perf_counter() - started,
                                               item.known_at))
            del self.transcripts[:-64]
            if item.final and self.clock is not None:
                self.final_latency_s.append(self.clock() - item.end)
                del self.final_latency_s[:-10_000]
        self.watermark = item.end

    def skip(self, item: SpeechSegment) -> None:
        with self._lock:  # counted as handled, so a max-speed replay does not wait for a transcript that never comes
            self.lost += 1
        self.watermark = max(self.watermark, item.end)

    def recent(self, t_end: float, seconds: float) -> list[TranscriptSpan]:
        """Final transcripts known by ``t_end`` whose speech ended within the last ``seconds``, then the newest
        partial transcript of speech still going on at ``t_end`` (none once its final is known)."""
        with self._lock:
            known = [tr for tr in self.transcripts if tr.known_at <= t_end]
        finals = [tr for tr in known if tr.final and tr.text and tr.end > t_end - seconds]
        done = {tr.start for tr in known if tr.final}
        partials = [tr for tr in known if not tr.final and tr.start not in done and tr.text]
        return finals + partials[-1:]


@dataclass
class StageTimes:
    """Compute seconds per stage, for latency and real-time-factor reports."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + value


def timed(times: StageTimes, name: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - started
    times.add(name, elapsed)
    return out, elapsed
