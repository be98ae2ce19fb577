"""Timestamped ring buffers of the live loop: frame embeddings and audio samples, bounded in time and memory."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrameEntry:
    t: float
    feature: np.ndarray | None  # None: no face in this frame (marked, not invented)
    box: tuple[float, float, float, float] | None
    score: float


class FrameRing:
    """Frame embeddings of the last ``keep_s`` seconds (thread-safe)."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._items: deque[FrameEntry] = deque()
        self._lock = threading.Lock()
        self.watermark = float("-inf")  # capture time of the newest frame processed

    def push(self, entry: FrameEntry) -> None:
        with self._lock:
            self._items.append(entry)
            self.watermark = max(self.watermark, entry.t)
            while self._items and self._items[0].t < entry.t - self.keep_s:
                self._items.popleft()

    def window(self, t_end: float, seconds: float) -> list[FrameEntry]:
        with self._lock:
            return [e for e in self._items if t_end - seconds < e.t <= t_end]

    def __len__(self) -> int:
        return len(self._items)


class AudioRing:
    """The last ``keep_s`` seconds of 16 kHz audio, addressed by capture time (thread-safe).

    Chunks are appended in order; the time of each sample follows from the chunk's start time.  A gap between
    chunks (lost audio) is filled with silence so that time and sample index stay aligned.
    """

    def __init__(self, keep_s: float, sample_rate: int = 16000) -> None:
        self.rate = sample_rate
        self.capacity = int(round(keep_s * sample_rate))
        self._buf = np.zeros(self.capacity, np.float32)
        self._end = 0  # samples written in total
        self._t0: float | None = None  # time of sample 0
        self._lock = threading.Lock()
        self.watermark = float("-inf")  # time just after the newest sample
        self.gap_samples = 0

    def push(self, t_start: float, chunk: np.ndarray) -> None:
        x = np.asarray(chunk, np.float32).reshape(-1)
        with self._lock:
            if self._t0 is None:
                self._t0 = t_start
            expected = int(round((t_start - self._t0) * self.rate))
            if expected > self._end:  # a gap: keep time aligned with silence
                gap = expected - self._end
                self.gap_samples += gap
                if gap > self.capacity:  # a long gap: only the last `capacity` samples of silence are held
                    self._end += gap - self.capacity
                    gap = self.capacity
                self._write(np.zeros(gap, np.float32))
            self._write(x)
            self.watermark = self._t0 + self._end / self.rate

    def _write(self, x: np.ndarray) -> None:
        if x.size >= self.capacity:
            self._buf[:] = x[-self.capacity:]
        else:
            pos = self._end % self.capacity
            first = min(x.size, self.capacity - pos)
            self._buf[pos:pos + first] = x[:first]
            self._buf[: x.size - first] = x[first:]
        self._end += x.size

    def index_at(self, t: float) -> int | None:
        """Index (samples since the first one) of capture time ``t``; None before any audio arrived."""
        with self._lock:
            return None if self._t0 is None else int(round((t - self._t0) * self.rate))

    def held(self) -> tuple[int, int]:
        """The [first, end) sample indices the ring holds now."""
        with self._lock:
            return max(0, self._end - self.capacity), self._end

    def samples(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) by index; the part no longer (or not yet) held is left out."""
        with self._lock:
            start, stop = max(start, self._end - self.capacity, 0), min(stop, self._end)
            if stop <= start:
                return np.zeros(0, np.float32)
            return self._buf[np.arange(start, stop) % self.capacity].copy()

    def window(self, t_end: float, seconds: float) -> np.ndarray:
        """Samples in (t_end - seconds, t_end]; what is no longer (or not yet) held is left out."""
        with self._lock:
            if self._t0 is None:
                return np.zeros(0, np.float32)
            stop = min(self._end, int(round((t_end - self._t0) * self.rate)))
            start = max(0, self._end - self.capacity, stop - int(round(seconds * self.rate)))
            if stop <= start:
                return np.zeros(0, np.float32)
            idx = np.arange(start, stop) % self.capacity
            return self._buf[idx].copy()
