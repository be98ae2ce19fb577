"""Capture sources: a camera (device index, file, RTSP URL, GStreamer pipeline, Jetson CSI); the shared base.

Every source runs one capture thread that stamps each sample from the run's one clock (:mod:`edge.stream.clock`)
and puts :class:`~edge.stream.queues.Sample` ``(t, data)`` items into bounded queues (:mod:`edge.stream.queues`).
It never dies silently: when it ends, for whatever reason, it puts one :class:`~edge.stream.queues.EndOfStream`
into each of its queues and closes them; errors are appended to ``errors``, logged, and passed to ``on_error``.
``start()`` opens the device or file in the caller's thread, so a source that cannot start raises a one-line
:class:`~edge.errors.InputError` there.  ``stop()`` returns within its timeout; sources are context managers.
The microphone lives in :mod:`edge.stream.microphone`, file replay in :mod:`edge.stream.replay`.
"""

from __future__ import annotations

import glob
import logging
import math
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from edge._lazy import lazy_import
from edge.errors import EdgeError, InputError
from edge.media import _existing
from edge.stream.clock import Clock, MediaClock
from edge.stream.queues import Closed, DropOldestQueue, EndOfStream, Sample

log = logging.getLogger("edge")

ErrorCallback = Callable[["Source", Exception], None]


@dataclass(frozen=True)
class SourceHealth:
    """A snapshot of a source: ``state`` is idle, running, reconnecting, ended, stopped or failed;
    ``last_sample_age`` is wall seconds since the last delivered sample (None before the first)."""

    name: str
    state: str
    frames: int
    audio_samples: int
    failures: int
    reconnects: int
    last_sample_age: float | None
    errors: tuple[str, ...]


class _Halt(Exception):
    """Internal: stop() was called or a consumer closed a queue."""


class Source:
    """Thread, life cycle, error reporting and end-of-stream handling shared by every source."""

    def __init__(self, name: str, *, clock: Clock, on_error: ErrorCallback | None = None) -> None:
        self.name = name
        self.clock = clock
        self.errors: list[Exception] = []
        self.end: EndOfStream | None = None
        self.finished = threading.Event()
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "idle"
        self._ended: set[int] = set()
        self._last_t: float | None = None
        self._last_wall: float | None = None
        self.frames = self.audio_samples = self.failures = self.reconnects = 0
        self.failures_in_row = 0

    # -- life cycle ---------------------------------------------------------------------------------------
    def start(self) -> Source:
        """Open the input (raising :class:`InputError` here when it cannot) and start the capture thread."""
        if self._thread is not None:
            return self
        self._open()
        self._state = "running"
        self._thread = threading.Thread(target=self._main, name=f"edge-source-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> bool:
        """Ask the thread to end and wait up to ``timeout`` s; True when it has ended (idempotent)."""
        self._stop.set()
        if self._thread is None:
            self._close()
            return True
        return self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the capture thread to end (the end of the file, a failure, or stop()); True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("source %s: capture thread still busy after %.1f s (blocked in the driver?)",
                            self.name, timeout or 0.0)
                return False
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Source:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def health(self) -> SourceHealth:
        age = None if self._last_wall is None else time.monotonic() - self._last_wall
        return SourceHealth(self.name, self._state, self.frames, self.audio_samples, self.failures,
                            self.reconnects, age, tuple(str(e) for e in self.errors))

    # -- what subclasses provide -----------------------------------------------------------------------------
    def _open(self) -> None:
        """Open the input in the caller's thread; raise InputError when it cannot be opened."""

    def _run(self) -> str:
        """Capture until the input ends (return "end") or stop() (raise _Halt); raise EdgeError to give up."""
        raise NotImplementedError

    def _close(self) -> None:
        """Release the input (called in the capture thread when it ends)."""

    def _queues(self) -> Sequence[Any]:
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------------------------------------
    def _main(self) -> None:
        reason, error = "end", None
        try:
            reason = self._run()
        except _Halt:
            reason = "stopped"
        except EdgeError as exc:
            reason, error = "error", exc
            self._report(exc)
        except Exception as exc:  # a bug: reported, never silent  # noqa: BLE001
            log.exception("source %s failed", self.name)
            reason, error = "error", exc
            self._report(exc, logged=True)
        finally:
            try:
                self._close()
            finally:
                self._finish(reason, error)

    def _report(self, error: Exception, *, logged: bool = False) -> None:
        self.errors.append(error)
        if not logged:
            log.error("source %s: %s", self.name, error)
        if self._on_error is not None:
            try:
                self._on_error(self, error)
            except Exception:  # noqa: BLE001 - a faulty callback must not kill capture
                log.exception("source %s: the on_error callback failed", self.name)

    def _end_queue(self, q: Any, reason: str, error: Exception | None) -> None:
        if q is None or id(q) in self._ended:
            return
        self._ended.add(id(q))
        try:
            q.put(EndOfStream(self.name, reason, error, self._last_t))
        except Closed:
            pass
        q.close()

    def _finish(self, reason: str, error: Exception | None) -> None:
        if reason == "end" and self.errors:
            reason, error = "error", self.errors[0]
        for q in self._queues():
            self._end_queue(q, reason, error)
        self.end = EndOfStream(self.name, reason, error, self._last_t)
        self._state = {"end": "ended", "stopped": "stopped"}.get(reason, "failed")
        if isinstance(self.clock, MediaClock):
            self.clock.close()
        self.finished.set()

    def _deliver(self, q: Any, sample: Sample, *, block: bool) -> None:
        """Put ``sample``; with ``block`` wait for room (back-pressure) while watching for stop()."""
        try:
            if not block:
                q.put(sample)
            else:
                while True:
                    try:
                        q.put(sample, block=True, timeout=0.1)
                        break
                    except queue.Full:
                        if self._stop.is_set():
                            raise _Halt from None
        except Closed:
            log.info("source %s: a consumer closed its queue; stopping", self.name)
            raise _Halt from None
        self._last_t, self._last_wall = sample.t, time.monotonic()

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake (raising _Halt) as soon as stop() is called."""
        if self._stop.wait(max(seconds, 0.0)):
            raise _Halt

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise _Halt


# ---------------------------------------------------------------------------------------------------------------
# Camera
# ---------------------------------------------------------------------------------------------------------------
#: Size and rate asked of a CSI sensor (nvarguscamerasrc) unless given.
CSI_SIZE = (1280, 720)
CSI_FPS = 30
#: Backoff between reconnection attempts, in seconds (the last one repeats).
RETRY = (0.5, 1.0, 2.0, 4.0, 8.0)
#: Consecutive failures (no frame, or no reconnection) before a camera is given up.
MAX_FAILURES = 10
#: Open and read timeouts asked of OpenCV's FFmpeg backend for network streams, in milliseconds.
NETWORK_TIMEOUT_MS = 5000

_GST_MISSING = ("this OpenCV was built without GStreamer (cv2.getBuildInformation() says GStreamer: NO), so GStreamer "
                "pipelines and CSI cameras cannot open; on Jetson use JetPack's OpenCV (apt python3-opencv), not the "
                "PyPI wheel: `pip uninstall opencv-python opencv-python-headless`")


@dataclass(frozen=True)
class CameraSpec:
    """What ``--camera`` names: ``kind`` is index, file, url, gstreamer or csi; ``target`` goes to VideoCapture."""

    kind: str
    target: int | str
    label: str


def csi_pipeline(sensor_id: int, *, size: tuple[int, int] = CSI_SIZE, fps: int = CSI_FPS) -> str:
    """The Jetson ``nvarguscamerasrc`` pipeline for CSI sensor ``sensor_id``, ending in a BGR appsink."""
    w, h = size
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM),width={w},height={h},"
            f"framerate={fps}/1 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
            f"appsink drop=1")


def gstreamer_available() -> bool:
    """True when this OpenCV build says ``GStreamer: YES``."""
    cv2 = lazy_import("cv2", purpose="camera capture")
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return line.split(":", 1)[1].strip().upper().startswith("YES")
    return False


def parse_camera_spec(spec: int | str, *, size: tuple[int, int] = CSI_SIZE, fps: float | None = None) -> CameraSpec:
    """Read ``--camera``: ``0`` / ``"0"``, ``csi://N``, a GStreamer pipeline (has ``!``), a URL, or a file path."""
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise InputError(f"--camera takes a device index, csi://N, a URL, a GStreamer pipeline or a file, got {spec!r}")
    text = str(spec).strip()
    if text.isdigit():
        return CameraSpec("index", int(text), f"camera {text}")
    if text.lower().startswith("csi://"):
        sensor = text[6:]
        if not sensor.isdigit():
            raise InputError(f"{text!r}: a CSI camera is csi://N with N the sensor id, e.g. csi://0")
        if not gstreamer_available():
            raise InputError(f"cannot open {text}: {_GST_MISSING}")
        rate = int(round(fps)) if fps else CSI_FPS
        return CameraSpec("csi", csi_pipeline(int(sensor), size=size, fps=rate), f"CSI camera {sensor}")
    if "!" in text:
        if not gstreamer_available():
            raise InputError(f"cannot open the GStreamer pipeline {text!r}: {_GST_MISSING}")
        return CameraSpec("gstreamer", text, "GStreamer pipeline")
    if "://" in text:
        return CameraSpec("url", text, text)
    return CameraSpec("file", str(_existing(text)), text)


def _video_devices() -> list[str]:
    return sorted(glob.glob("/dev/video*")) if sys.platform.startswith("linux") else []


def _quiet_opencv(cv2: Any) -> None:
    """OpenCV's own warnings on a failed open would repeat our one-line error on stderr: keep only errors."""
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # OpenCV builds without the logging module
        pass


def preflight_camera(spec: int | str) -> None:
    """Open and release the camera once, so that a missing camera is reported before anything else starts."""
    parsed = parse_camera_spec(spec)
    if parsed.kind in ("file",):
        return
    cap = open_capture(parsed)
    if cap is None:
        raise _open_error(parsed)
    cap.release()


def open_capture(spec: CameraSpec) -> Any | None:
    """The default opener: an opened ``cv2.VideoCapture`` for ``spec``, or None when it does not open."""
    cv2 = lazy_import("cv2", purpose="camera capture")
    _quiet_opencv(cv2)
    if spec.kind in ("gstreamer", "csi"):
        cap = cv2.VideoCapture(spec.target, cv2.CAP_GSTREAMER)
    elif spec.kind == "url":
        cap = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS,
                                                            cv2.CAP_PROP_READ_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS])
    else:
        cap = cv2.VideoCapture(spec.target)
    if cap.isOpened():
        return cap
    cap.release()
    return None


def _open_error(spec: CameraSpec) -> InputError:
    if spec.kind == "index":
        devices = _video_devices()
        why = (f"OpenCV could not open it; this machine has {', '.join(devices)}" if devices
               else "no /dev/video* device on this machine" if sys.platform.startswith("linux")
               else "OpenCV could not open it")
        return InputError(f"no camera at index {spec.target} ({why}); use --video FILE to replay a recording")
    if spec.kind == "csi":
        return InputError(f"the {spec.label} did not start (nvarguscamerasrc failed: no sensor there, or the "
                          f"camera is busy); check it with `nvgstcapture-1.0`, or use --video FILE")
    if spec.kind == "gstreamer":
        return InputError(f"the GStreamer pipeline did not start: {spec.target!r}; try it with "
                          f"`gst-launch-1.0` (ending in fakesink) to see why")
    if spec.kind == "url":
        return InputError(f"cannot open the stream {spec.target!r} (unreachable, wrong credentials, or a codec "
                          f"OpenCV's FFmpeg lacks); check it with `ffprobe {spec.target}`")
    return InputError(f"cannot open {spec.target!r} as a video: not a video file, or a codec OpenCV lacks; "
                      f"check it with `ffprobe {spec.target}`")


class CameraSource(Source):
    """Frames from a camera (or anything OpenCV's VideoCapture opens) into a :class:`DropOldestQueue`.

    Items are ``Sample(t, rgb uint8 (H, W, 3))`` stamped with ``clock.now()`` when the frame is read.  ``fps``
    caps the rate delivered (frames arriving faster are skipped; the device is asked for it too).  A file is read
    at its own frame rate, like a live camera, and ends with ``EndOfStream("end")``.  A device that stops
    delivering frames or vanishes is reopened after each wait of ``retry`` (seconds; the last repeats), counted in
    ``failures`` / ``reconnects``; after ``max_failures`` consecutive failures it is given up: an
    :class:`InputError` is reported and the queue gets ``EndOfStream("error")``.  A read that blocks is bounded by
    the backend's own timeouts (V4L2: 10 s; network streams: ``NETWORK_TIMEOUT_MS``); ``health().last_sample_age``
    shows a stall while it lasts.

    ``opener(spec) -> capture | None`` replaces :func:`open_capture` for fault injection in tests only: the capture
    needs ``read() -> (ok, bgr)`` and ``release()``.
    """

    def __init__(self, spec: int | str, *, clock: Clock, queue: DropOldestQueue, fps: float | None = None,
                 retry: Sequence[float] = RETRY, max_failures: int = MAX_FAILURES, size: tuple[int, int] = CSI_SIZE,
                 on_error: ErrorCallback | None = None, opener: Callable[[CameraSpec], Any] | None = None,
                 name: str = "camera") -> None:
        super().__init__(name, clock=clock, on_error=on_error)
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0):
            raise InputError(f"fps must be a positive number of frames per second or None, got {fps!r}")
        if not retry or any(not isinstance(r, (int, float)) or r < 0 for r in retry):
            raise InputError(f"retry must be a non-empty sequence of waits in seconds (>= 0), got {retry!r}")
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
            raise InputError(f"max_failures must be a whole number >= 1, got {max_failures!r}")
        self.spec = parse_camera_spec(spec, size=size, fps=fps)
        self.queue = queue
        self.fps = None if fps is None else float(fps)
        self.retry = tuple(float(r) for r in retry)
        self.max_failures = max_failures
        self._opener = opener or open_capture
        self._cap: Any = None

    def _queues(self) -> Sequence[Any]:
        return (self.queue,)

    def _try_open(self) -> Any | None:
        try:
            cap = self._opener(self.spec)
        except EdgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - a driver error is a failed attempt, reported below
            log.warning("%s: opening failed: %s", self.spec.label, exc)
            return None
        if cap is not None and self.fps and self.spec.kind == "index":
            try:
                cap.set(lazy_import("cv2").CAP_PROP_FPS, self.fps)
            except Exception:  # noqa: BLE001 - a rate the device refuses is not an error
                pass
        return cap

    def _open(self) -> None:
        self._cap = self._try_open()
        if self._cap is None:
            raise _open_error(self.spec)

    def _close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            try:
                cap.release()
            except Exception:  # noqa: BLE001
                log.debug("%s: release failed", self.spec.label, exc_info=True)

    def _read(self) -> tuple[Any, str]:
        try:
            ok, bgr = self._cap.read()
        except Exception as exc:  # noqa: BLE001 - a driver error is a failure, retried below
            return None, f"read failed: {exc}"
        if not ok or bgr is None:
            return None, "no frame"
        return bgr, ""

    def _run(self) -> str:
        cv2 = lazy_import("cv2", purpose="camera capture")
        interval = 1.0 / self.fps if self.fps else 0.0
        next_due = -math.inf
        started, first_pos = time.monotonic(), None
        while True:
            self._check_stop()
            bgr, why = self._read()
            if bgr is None:
                if self.spec.kind == "file" and not why.startswith("read failed"):
                    return "end"
                self._reconnect(why)
                continue
            self.failures_in_row = 0
            if self.spec.kind == "file":  # a file plays at its own pace, like a camera
                pos = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                first_pos = pos if first_pos is None else first_pos
                self._sleep(started + pos - first_pos - time.monotonic())
            t = self.clock.now()
            if interval and t + 0.25 * interval < next_due:
                continue
            next_due = max(next_due + interval, t) if interval else t
            self._deliver(self.queue, Sample(t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), block=False)
            self.frames += 1
            self._state = "running"

    def _reconnect(self, why: str) -> None:
        """Release, wait with backoff and reopen until a capture opens; InputError after max_failures in a row."""
        while True:
            self.failures += 1
            self.failures_in_row += 1
            if self.failures_in_row > self.max_failures:
                raise InputError(f"{self.spec.label} stopped delivering frames ({why}); gave up after "
                                 f"{self.max_failures} attempts to reconnect; check the cable or the stream")
            wait = self.retry[min(self.failures_in_row - 1, len(self.retry) - 1)]
            log.warning("%s: %s; reconnecting in %.1f s (attempt %d of %d)", self.spec.label, why, wait,
                        self.failures_in_row, self.max_failures)
            self._state = "reconnecting"
            self._close()
            self._sleep(wait)
            self._cap = self._try_open()
            if self._cap is not None:
                self.reconnects += 1
                log.info("%s: reconnected", self.spec.label)
                return
            why = "cannot reopen it"


# ---------------------------------------------------------------------------------------------------------------
# File replay
# ---------------------------------------------------------------------------------------------------------------
