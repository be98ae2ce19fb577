"""Video file decoding with OpenCV (run path; cv2 is imported lazily, numpy only otherwise).

:class:`VideoFileReader` yields ``(timestamp_seconds, rgb uint8 H x W x 3)`` frames of a file, optionally resampled
to a lower rate by timestamp (the vision stage samples 16 fps); :func:`read_frames` fetches chosen frame indices
(the paper's 8 segments x 8 frames).  A truncated file yields the frames that decode and then raises
:class:`~edge.errors.InputError` naming the last good timestamp.  :func:`probe` (ffprobe) is re-exported from
:mod:`edge.media`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.media import _existing, describe_failure, probe

__all__ = ["VideoFileReader", "read_frames", "probe"]

log = logging.getLogger("edge")

#: Formats OpenCV's FFmpeg backend reads (what the "cannot open" message suggests).
SUPPORTED = "mp4/mov (H.264, HEVC), mkv, webm (VP8/VP9), avi (MJPEG)"
#: A gap between wanted frames longer than this (in frames) is crossed by seeking rather than by decoding.
SEEK_GAP = 300
#: Decoding may end this many frames (or this fraction of them) short of the container's count before the
#: file is called truncated (frame counts of some containers are estimates).
_SHORT_FRAMES, _SHORT_FRACTION = 2, 0.02


def _cv2() -> Any:
    return lazy_import("cv2", purpose="reading video files")


def _open(path: Path, *, check: bool = True) -> Any:
    """An opened cv2.VideoCapture; ``check`` first asks ffprobe (where installed) whether the file is video at all
    (ffmpeg, and so OpenCV, would otherwise render a text file as a video of its characters)."""
    cv2 = _cv2()
    why = describe_failure(path) if check else ""
    cap = cv2.VideoCapture(str(path)) if not why else None
    if cap is not None and cap.isOpened():
        return cap
    if cap is not None:
        cap.release()
        why = why or describe_failure(path)
    reason = f" ({why})" if why else ""
    raise InputError(f"cannot open {str(path)!r} as a video{reason}: it is not a video file, its codec is not "
                     f"supported, or it is truncated. Formats that work: {SUPPORTED}; "
                     f"check the file with `ffprobe {path}`")


class VideoFileReader:
    """A video file as an iterable of ``(timestamp_seconds, frame)``: RGB uint8 arrays of shape (H, W, 3).

    ``fps=None`` yields every frame; ``fps=16`` resamples by timestamp: for each tick ``k / fps`` the frame whose
    timestamp is nearest is kept (a frame is never repeated and none is invented, so a source slower than ``fps``
    keeps all its frames).  Each iteration opens its own decoder and releases it when the loop ends or stops.

    Properties describe the file as the container states it: ``fps`` (native frames per second), ``frame_count``,
    ``size`` (width, height) and ``duration`` (seconds).  ``target_fps`` is the requested output rate or None.
    """

    def __init__(self, path: str | Path, *, fps: float | None = None) -> None:
        self.path = _existing(path)
        if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise InputError(f"fps must be a positive number of frames per second or None, got {fps!r}")
        self.target_fps = None if fps is None else float(fps)
        cv2 = _cv2()
        cap = _open(self.path)
        try:
            self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self.frame_count = max(int(round(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)), 0)
            self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        finally:
            cap.release()
        if not math.isfinite(self.fps) or self.fps <= 0:
            log.warning("%s states no frame rate; timestamps come from the decoder alone", self.path)
            self.fps = 0.0

    @property
    def duration(self) -> float:
        """Length in seconds (frame_count / fps; 0.0 where the container states neither)."""
        return self.frame_count / self.fps if self.fps > 0 else 0.0

    def __repr__(self) -> str:
        return (f"VideoFileReader({str(self.path)!r}, fps={self.target_fps}) <{self.size[0]}x{self.size[1]}, "
                f"{self.fps:.3f} fps, {self.frame_count} frames, {self.duration:.3f} s>")

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        frames = self._decode()
        return frames if self.target_fps is None else self._resample(frames, self.target_fps)

    def read_frames(self, indices: Iterable[int]) -> np.ndarray:
        """RGB frames at the given native frame ``indices``; see :func:`read_frames`."""
        return read_frames(self.path, indices)

    def _decode(self) -> Iterator[tuple[float, np.ndarray]]:
        """Every frame with its timestamp; raises InputError after the last good frame of a truncated file."""
        cv2 = _cv2()
        cap = _open(self.path, check=False)  # checked when the reader was made
        count, last = 0, None
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                last = _timestamp(cap, count, self.fps, last)
                count += 1
                yield last, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()
        self._check_complete(count, last)

    def _check_complete(self, count: int, last: float | None) -> None:
        expected = self.frame_count
        if count == 0:
            raise InputError(f"no frame of {str(self.path)!r} decodes: the file is truncated or corrupt; "
                             f"check it with `ffprobe {self.path}`")
        if expected > 0 and count < expected - max(_SHORT_FRAMES, _SHORT_FRACTION * expected):
            raise InputError(f"{str(self.path)!r} is truncated or corrupt: decoding stopped after {count} of "
                             f"{expected} frames; the last good frame is at {last:.3f} s")

    @staticmethod
    def _resample(frames: Iterator[tuple[float, np.ndarray]], fps: float) -> Iterator[tuple[float, np.ndarray]]:
        """Keep, for each tick k / fps, the frame nearest to it; never repeat a frame."""
        step = 1.0 / fps
        k, prev, emitted = 0, None, -1  # next tick index, previous (index, t, frame), last index yielded
        for index, (t, frame) in enumerate(frames):
            while t >= k * step:
                tick = k * step
                k += 1
                if prev is not None and tick - prev[1] <= t - tick:
                    choice = prev
                else:
                    choice = (index, t, frame)
                if choice[0] != emitted:
                    emitted = choice[0]
                    yield choice[1], choice[2]
            prev = (index, t, frame)
        if prev is not None and prev[0] != emitted and k * step - prev[1] < step / 2:
            yield prev[1], prev[2]  # the last frame is the nearest one to a tick past the end


def _timestamp(cap: Any, index: int, fps: float, previous: float | None) -> float:
    """The decoder's timestamp of the frame just read, made strictly increasing (index / fps where it is not)."""
    cv2 = _cv2()
    ms = cap.get(cv2.CAP_PROP_POS_MSEC)
    t = ms / 1000.0 if ms is not None and math.isfinite(ms) and ms >= 0 else -1.0
    if previous is not None and t <= previous:
        t = index / fps if fps > 0 else -1.0
        if t <= previous:
            t = previous + (1.0 / fps if fps > 0 else 1e-3)
    return max(t, 0.0)


def read_frames(path: str | Path, indices: Iterable[int]) -> np.ndarray:
    """RGB uint8 frames (N, H, W, 3) of ``path`` at native frame ``indices`` (any order, repeats allowed).

    Frames are decoded in order (exact; long gaps are crossed by seeking).  An index past the end of the file
    raises :class:`InputError` that says how many frames the file has.
    """
    p = _existing(path)
    wanted = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
    if wanted.ndim != 1 or (wanted.size and not np.issubdtype(wanted.dtype, np.integer)):
        raise InputError(f"indices must be a flat sequence of whole frame numbers, got {wanted!r}")
    if wanted.size and wanted.min() < 0:
        raise InputError(f"frame indices must be >= 0, got {int(wanted.min())}")
    if wanted.size == 0:
        raise InputError("read_frames needs at least one frame index")
    cv2 = _cv2()
    cap = _open(p)
    got: dict[int, np.ndarray] = {}
    position = 0  # index of the next frame grab() returns
    try:
        for target in sorted(set(int(i) for i in wanted)):
            if target - position > SEEK_GAP and cap.set(cv2.CAP_PROP_POS_FRAMES, target):
                position = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
            while position <= target:
                if not cap.grab():
                    raise InputError(f"frame {target} of {str(p)!r} was asked for, but only {position} frames "
                                     f"decode (frame indices start at 0)")
                position += 1
            ok, bgr = cap.retrieve()
            if not ok:
                raise InputError(f"frame {target} of {str(p)!r} does not decode; the file is corrupt")
            got[target] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
    return np.stack([got[int(i)] for i in wanted])
