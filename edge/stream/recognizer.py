"""The Python API of the live loop: a :class:`Recognizer` to embed in a kiosk application.

    from edge.stream import Recognizer, RunConfig

    with Recognizer(RunConfig(camera="0")) as rec:          # starts capture, stages and fusion threads
        rec.on_estimate(lambda e: print(e.label(), e.confidence()))   # called on a dispatcher thread
        for estimate in rec.estimates():                    # or iterate (blocks; ends with the stream)
            ...
        # rec.latest() never blocks: safe to poll from a UI thread

Threads: one per source, one per stage (vision, audio, ASR), one for fusion ticks and one that delivers
estimates to callbacks and iterators, so a slow callback never stalls recognition.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import Any, Callable, Iterator

from edge.errors import InputError
from edge.stream.config import RunConfig
from edge.stream.estimate import Estimate, Smoother
from edge.stream.failures import Failure, FailureReporter, RestartPolicy
from edge.stream.queues import AudioQueue, DropOldestQueue
from edge.stream.rings import AudioRing, FrameRing
from edge.stream.stages import ASRStage, AudioStage, VisionStage

log = logging.getLogger("edge")
_END = object()
KEEP_MARGIN_S = 10.0


class Recognizer:
    def __init__(self, config: RunConfig, *, engines: Any = None, asr: Any = None, vad: Any = None,
                 sources: Callable[["Recognizer"], list[Any]] | None = None) -> None:
        """``engines`` / ``asr`` / ``vad`` (a :class:`~edge.stream.vad.SileroVADModel`): loaded networks and
        speech recognizer to share between streams (else opened here); ``sources``:
        a factory ``(recognizer) -> [Source, ...]`` replacing the capture or replay sources of ``config``
        (e.g. :class:`edge.stream.push.PushSource`; it may read ``video_q``, ``audio_q``, ``clock`` and ``fps``)."""
        self.config = config
        self._engines = engines
        self._owns_engines = engines is None
        self._asr = asr
        self._vad = vad
        self._source_factory = sources
        self._callbacks: list[Callable[[Estimate], None]] = []
        self._error_callbacks: list[Callable[[Failure], None]] = []
        self._subscribers: list[queue.Queue] = []
        self._latest: Estimate | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.finished = threading.Event()
        self.estimates_emitted = 0
        self.history: list[dict[str, float]] = []  # per-estimate latency figures for the summary
        #: every failure of a stage, source, encoder or sink (see edge.stream.failures)
        self.reporter = FailureReporter(RestartPolicy(config.restart), notify=self._failure)
        self._threads: list[threading.Thread] = []
        self.sources: list[Any] = []
        self.started_wall: float | None = None
        self.media_seconds = 0.0

    # -- set-up ------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        from edge.features.extractors import Extractors
        from edge.runtime.engines import open_engines
        from edge.stream.clock import MediaClock, MonotonicClock

        c = self.config
        if self._engines is None:
            self._ensure_build()
            self._engines = open_engines(c.profile, target=c.target, root=c.engines_root,
                                         directory=c.engines or None, threads=c.threads or None)
        if self._engines.manifest.get("random_weights"):
            log.warning("this build has RANDOM weights (%s): the estimates show the mechanics and the cost, not "
                        "emotions", self._engines.directory)
        self.extractors = Extractors(self._engines)
        p = self.extractors.profile
        self.rate = c.rate or p.stream.rate_hz
        self.window = c.window or p.stream.window_s
        self.fps = c.fps or p.vision.fps
        self.clock = MediaClock() if c.speed == "max" else MonotonicClock()
        keep = self.window + KEEP_MARGIN_S
        self.video_q = DropOldestQueue(8)
        self.audio_q = AudioQueue(max_seconds=30.0, sample_rate=p.audio.sample_rate)
        self.frame_ring = FrameRing(keep)
        self.audio_ring = AudioRing(keep, p.audio.sample_rate)
        self.asr_q: queue.Queue = queue.Queue()
        segmenter = self._segmenter()
        asr = self._asr if self._asr is not None else self._open_asr()
        self.vision = VisionStage(self.video_q, self.extractors, self.frame_ring, detect_every=c.detect_every)
        self.audio = AudioStage(self.audio_q, self.audio_ring, segmenter, self.asr_q if asr is not None else None,
                                partial_s=c.partial_s)
        live = c.speed != "max"
        self.asr = (ASRStage(self.asr_q, asr, skip_stale_partials=live, clock=self.clock.now if live else None)
                    if asr is not None else None)
        self.smoother = Smoother(c.smoothing, alpha=c.alpha)
        from edge.stream.fusion import Fusion

        self.fusion = Fusion(self.extractors, self.vision, self.audio, self.asr, self.smoother,
                             window_s=self.window, text_window_s=c.text_window)
        for part in (self.vision, self.audio, self.asr, self.fusion):
            if part is not None:
                part.reporter = self.reporter
        self.sources = self._sources()
        self._outbox: queue.Queue = queue.Queue()
        if not self.sources_have_video:
            self.video_q.close()  # nothing will arrive: let the vision stage finish at once

    def _ensure_build(self) -> None:
        """The first run of a profile makes its build (once; cached under --engines-root): see
        :mod:`edge.stream.first_run`."""
        c = self.config
        if c.engines:
            return
        from edge.stream.first_run import ensure_build

        ensure_build(c.profile, target=c.target, root=c.engines_root, random_weights=c.random_weights,
                     threads=c.threads or None)

    def _segmenter(self) -> Any:
        from edge.stream.vad import SileroVAD, VADSegmenter

        vad = SileroVAD(model=self._vad) if self._vad is not None else SileroVAD(threads=1)
        return VADSegmenter(vad, threshold=self.config.vad_threshold)

    def _open_asr(self) -> Any:
        from edge.asr.registry import open_planned, plan_for_run

        plan = self._asr_plan if hasattr(self, "_asr_plan") else plan_for_run(self.config, self.extractors.profile)
        return open_planned(plan)

    def _sources(self) -> list[Any]:
        from edge.stream.replay import FileReplaySource
        from edge.stream.sources import CameraSource

        c = self.config
        if self._source_factory is not None:
            sources = list(self._source_factory(self))
            self.sources_have_video = any(getattr(s, "has_video", True) for s in sources)
            return sources
        on_error = self._source_error
        self.sources_have_video = not c.audio
        if c.video or c.audio:
            path = c.video or c.audio
            return [FileReplaySource(path, speed=c.speed, clock=self.clock, video_queue=self.video_q if c.video else None,
                                     audio_queue=self.audio_q, fps=self.fps, on_error=on_error)]
        from edge.stream.microphone import MicrophoneSource

        camera = CameraSource(c.camera or "0", clock=self.clock, queue=self.video_q, fps=self.fps, on_error=on_error)
        mic = MicrophoneSource(c.mic or None, clock=self.clock, queue=self.audio_q, on_error=on_error)
        return [camera, mic]

    def _source_error(self, source: Any, error: Exception) -> None:
        message = str(error)
        if any(message in m for m in self.errors):  # the same failure reported by two streams of one file counts once
            return
        name = getattr(source, "name", "source")
        part = "replay" if "replay" in type(source).__name__.lower() else name
        self.reporter.report(part, error, restartable=False)  # sources retry on their own (cameras reconnect)

    def _failure(self, failure: Failure) -> None:
        """A failure was reported (any thread): deliver it to the error callbacks on the dispatcher thread."""
        outbox = getattr(self, "_outbox", None)
        if outbox is not None:
            outbox.put(failure)

    @property
    def errors(self) -> list[str]:
        """Every failure of the run so far, one line each (``failures`` has the records)."""
        return self.reporter.messages

    @property
    def failures(self) -> list[Failure]:
        return list(self.reporter.failures)

    # -- life cycle --------------------------------------------------------------------------------------------
    def start(self) -> "Recognizer":
        self.preflight()
        self._open()
        self.started_wall = time.monotonic()
        stages = [s for s in (self.vision, self.audio, self.asr) if s is not None]
        for stage in stages:
            stage.start()
        try:
            for source in self.sources:
                source.start()
        except BaseException:
            self.stop()
            raise
        for target, name in ((self._tick_loop, "edge-fusion"), (self._dispatch_loop, "edge-dispatch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def preflight(self) -> None:
        """Check the capture devices, then the speech recognition options, before loading models: a missing camera
        or microphone, or a bad --asr / --asr-model / --language, fails in one line."""
        c = self.config
        if self._source_factory is not None:  # the caller's sources open (and fail) in start()
            pass
        elif c.video or c.audio:
            check_sources(c)
        else:
            from edge.stream.microphone import _sounddevice, resolve_device
            from edge.stream.sources import preflight_camera

            preflight_camera(c.camera or "0")
            resolve_device(_sounddevice(), c.mic or None)
        if self._asr is None:
            from edge.asr.registry import plan_for_run
            from edge.profile import load_profile

            self._asr_plan = plan_for_run(c, load_profile(c.profile))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for source in self.sources:
            source.stop()
        for q in (getattr(self, "video_q", None), getattr(self, "audio_q", None)):
            if q is not None:
                q.close()
        stages = [getattr(self, name, None) for name in ("vision", "audio", "asr")]
        for stage in stages:
            if stage is not None:
                stage.stop()
        for thread in self._threads:
            thread.join(timeout)
        for stage in stages:
            if stage is not None and stage._thread.is_alive():
                stage.join(timeout)
        if self._owns_engines and self._engines is not None:
            self._engines.close()

    def __enter__(self) -> "Recognizer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- consumers ---------------------------------------------------------------------------------------------
    def on_estimate(self, callback: Callable[[Estimate], None]) -> None:
        """Call ``callback(estimate)`` for every estimate, on the dispatcher thread.  A callback that raises is
        reported as a failure (``sink <name> failed: ...``) and not called again."""
        self._callbacks.append(callback)

    def on_error(self, callback: Callable[[Failure], None]) -> None:
        """Call ``callback(failure)`` for every failure of a part of the loop, on the dispatcher thread."""
        self._error_callbacks.append(callback)

    def estimates(self, timeout: float | None = None) -> Iterator[Estimate]:
        """Every estimate from now on, until the stream ends or ``stop()``; ``timeout`` bounds each wait."""
        q: queue.Queue = queue.Queue()
        with self._lock:
            self._subscribers.append(q)
        try:
            while True:
                try:
                    item = q.get(timeout=timeout)
                except queue.Empty:
                    return
                if item is _END:
                    return
                yield item
        finally:
            with self._lock:
                if q in self._subscribers:
                    self._subscribers.remove(q)

    def latest(self) -> Estimate | None:
        return self._latest

    @property
    def origin(self) -> float | None:
        """The run's clock at its start (an estimate's ``media_time`` counts from it); None until it started."""
        return getattr(self, "_t0", None)

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)

    # -- threads -----------------------------------------------------------------------------------------------
    def _outbox_put(self, item: Any) -> None:
        self._outbox.put(item)

    def _dispatch_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if isinstance(item, Failure):
                for callback in list(self._error_callbacks):
                    try:
                        callback(item)
                    except Exception:  # noqa: BLE001 - an error callback that fails is logged, nothing more
                        log.exception("error callback failed")
                continue
            with self._lock:
                subscribers = list(self._subscribers)
            if item is _END:
                for q in subscribers:
                    q.put(_END)
                self.finished.set()
                return
            self._latest = item
            for q in subscribers:
                q.put(item)
            for callback in list(self._callbacks):
                try:
                    callback(item)
                except Exception as exc:  # a kiosk callback must not stop recognition: reported, then dropped
                    self._callbacks.remove(callback)
                    name = getattr(callback, "name", None) or type(callback).__name__
                    self.reporter.report(f"sink {name}", exc, restartable=False)

    def _stages_done(self) -> bool:
        return all(s.done.is_set() for s in (self.vision, self.audio, self.asr) if s is not None)

    def _sources_done(self) -> bool:
        return all(s.finished.is_set() for s in self.sources)

    def _ready(self, t: float) -> bool:
        """Max-speed replay: has every stage processed everything up to ``t``?"""
        if self.vision.watermark < t and not self.vision.done.is_set() and self.config.video:
            return False
        if self.audio.watermark < t and not self.audio.done.is_set():
            return False
        if self.asr is not None and not self.asr.done.is_set():
            return self.asr.items + self.asr.lost >= self.audio.segments_known_by(t)
        return True

    def _emit(self, t: float, *, live: bool) -> None:
        newest = max(self.frame_ring.watermark, self.audio_ring.watermark)
        dropped = {"frames": float(self.video_q.dropped), "audio_s": round(self.audio_q.overflow_seconds, 3)}
        estimate = self.fusion.tick(t, origin=self._t0, clock_now=self.clock.now if live else None,
                                    newest_capture=newest if live and math.isfinite(newest) else None,
                                    dropped=dropped)
        self.estimates_emitted += 1
        self.history.append(dict(estimate.latency_ms))
        del self.history[:-100_000]
        self.media_seconds = max(self.media_seconds, t - self._t0)
        self._outbox_put(estimate)

    def _tick_loop(self) -> None:
        period = 1.0 / self.rate
        try:
            if self.config.speed == "max":
                self._ticks_max(period)
            else:
                self._ticks_live(period)
        except BaseException as exc:  # no estimate can be made any more: reported, and the run ends
            self.reporter.report("fusion", exc, restartable=False)
        finally:
            self._outbox_put(_END)

    def _ticks_live(self, period: float) -> None:
        self._t0 = start = self.clock.now()
        k = 1
        deadline = start + self.config.max_seconds if self.config.max_seconds else math.inf
        while not self._stop.is_set():
            due = start + k * period
            self.clock.wait_until(due)
            if self._stop.is_set():
                break
            now = self.clock.now()
            if now > due + period:  # late: skip the ticks that cannot be on time any more
                k = int((now - start) / period)
                due = start + k * period
            if self._sources_done():
                # the input ended: let the stages finish what they hold, then one last estimate
                while not self._stop.is_set() and not self._stages_done():
                    time.sleep(0.01)
                self._emit(self.clock.now(), live=True)
                break
            self._emit(now, live=True)
            k += 1
            if now >= deadline:
                break

    def _ticks_max(self, period: float) -> None:
        self._t0 = 0.0
        k = 1
        end_of_media = math.inf
        while not self._stop.is_set():
            t = k * period
            if self.config.max_seconds and t > self.config.max_seconds:
                break
            while not self._stop.is_set() and not self._ready(t):
                time.sleep(0.002)
            if self._stages_done():
                end_of_media = min(end_of_media, max(self.frame_ring.watermark if math.isfinite(
                    self.frame_ring.watermark) else 0.0, self.audio_ring.watermark if math.isfinite(
                    self.audio_ring.watermark) else 0.0))
            if t > end_of_media + 1e-9:
                if end_of_media > (k - 1) * period + 1e-6 and not self._stop.is_set():
                    self._emit(end_of_media, live=False)  # the last partial period of the file
                break
            self._emit(t, live=False)
            k += 1

    # -- reports -----------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        import numpy as np

        wall = time.monotonic() - (self.started_wall or time.monotonic())
        e2e = [h["end_to_end"] for h in self.history if "end_to_end" in h]
        ticks = [h["tick"] for h in self.history if "tick" in h]

        def pct(values, q):
            return None if not values else round(float(np.percentile(values, q)), 2)

        stages = {"vision": self.vision.busy_s, "audio_vad": self.audio.busy_s,
                  "asr": self.asr.busy_s if self.asr else 0.0, **self.fusion.compute_s}
        media = max(self.media_seconds, 1e-9)
        return {
            "estimates": self.estimates_emitted, "wall_seconds": round(wall, 3),
            "media_seconds": round(self.media_seconds, 3),
            "end_to_end_ms": {"p50": pct(e2e, 50), "p95": pct(e2e, 95), "p99": pct(e2e, 99)},
            "tick_ms": {"p50": pct(ticks, 50), "p95": pct(ticks, 95)},
            "compute_seconds_per_media_second": {k: round(v / media, 4) for k, v in stages.items()},
            "real_time_factor": round(sum(stages.values()) / media, 4),
            "frames": self.vision.frames, "frames_with_face": self.vision.faces,
            "dropped_frames": self.video_q.dropped, "audio_overflow_s": round(self.audio_q.overflow_seconds, 3),
            "speech_segments": len(self.audio.speech), "transcripts": [t.text for t in self.asr.transcripts if t.final] if self.asr else [],
            "partial_transcripts": sum(not t.final for t in self.asr.transcripts) if self.asr else 0,
            "errors": list(self.errors), "restarts": dict(self.reporter.restarts),
            "down": sorted(f.part for f in self.reporter.failures if f.final),
        }


def check_sources(config: RunConfig) -> None:
    """Fail early, in one line, for a replay file that does not exist."""
    from pathlib import Path

    for name in ("video", "audio"):
        path = getattr(config, name)
        if path and not Path(path).exists():
            raise InputError(f"--{name} {path}: no such file")
