"""Bounded, thread-safe queues between sources and stages, and the items that travel through them.

Items are :class:`Sample` ``(t, data)`` tuples (``t`` in seconds of the run's one clock) and, last of all, one
:class:`EndOfStream` marker.  Two policies, one implementation:

* :class:`DropOldestQueue` (video): a full queue drops its *oldest* item to make room; drops are counted
  (``dropped``) because a late frame is worth less than a fresh one.
* :class:`AudioQueue` (audio): bounded in *seconds* of audio; an overflow drops the oldest chunks, counts the
  samples (``overflow_samples`` / ``overflow_seconds``) and logs one warning per burst: audio is never dropped
  silently.

``put(item)`` never blocks by default (live capture must not stall); ``put(item, block=True)`` waits for room
instead (back-pressure, used by ``--speed max`` replay so that nothing is dropped).  ``close()`` ends the queue:
``get`` returns what is left and then raises :class:`Closed`; ``put`` on a closed queue raises :class:`Closed`.
``get(timeout=...)`` raises :class:`queue.Empty` when nothing arrives in time.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from edge.errors import EdgeError, InputError

log = logging.getLogger("edge")

Empty = queue.Empty


class Closed(Exception):
    """The queue was closed: no more items will be put (``get`` raises it once the queue is drained)."""


class Sample(NamedTuple):
    """One timestamped sample: ``t`` is the capture time (seconds, the run's clock) of its first element.

    ``data`` is an RGB uint8 frame (H, W, 3) from video sources, float32 mono 16 kHz samples from audio sources.
    """

    t: float
    data: np.ndarray


@dataclass(frozen=True)
class EndOfStream:
    """The last item a source puts into each of its queues.

    ``reason`` is ``"end"`` (end of the file), ``"stopped"`` (stop() was called) or ``"error"`` (the source gave up
    or the file is truncated or corrupt; ``error`` then holds the :class:`~edge.errors.EdgeError`, whose message is
    fit for the user).  ``t`` is the timestamp of the last sample delivered (None when there was none).
    """

    source: str
    reason: str = "end"
    error: EdgeError | None = None
    t: float | None = None


class _BoundedQueue:
    """A deque bounded by a cost per item; the subclass says what an item costs and what an overflow does."""

    def __init__(self, capacity: int) -> None:
        self._capacity = int(capacity)
        self._items: deque[Any] = deque()
        self._load = 0
        self._closed = False
        self._cond = threading.Condition()
        self.put_count = 0

    def _cost(self, item: Any) -> int:
        raise NotImplementedError

    def _on_drop(self, item: Any, cost: int) -> None:
        raise NotImplementedError

    def _on_fit(self) -> None:
        """A put needed no drop (ends an overflow burst)."""

    def put(self, item: Any, *, block: bool = False, timeout: float | None = None) -> None:
        """Add ``item``; when full, drop the oldest items (``block=False``) or wait for room (``block=True``;
        :class:`queue.Full` after ``timeout`` seconds).  Raises :class:`Closed` on a closed queue."""
        cost = self._cost(item)
        with self._cond:
            if block:
                room = lambda: self._closed or not self._items or self._load + cost <= self._capacity  # noqa: E731
                if not self._cond.wait_for(room, timeout):
                    raise queue.Full
            if self._closed:
                raise Closed
            dropped = False
            while self._items and self._load + cost > self._capacity:
                old = self._items.popleft()
                old_cost = self._cost(old)
                self._load -= old_cost
                self._on_drop(old, old_cost)
                dropped = True
            if not dropped:
                self._on_fit()
            self._items.append(item)
            self._load += cost
            self.put_count += 1
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item; waits up to ``timeout`` seconds (forever when None).

        Raises :class:`queue.Empty` on timeout and :class:`Closed` once the queue is closed and drained."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                raise Empty
            if not self._items:
                raise Closed
            item = self._items.popleft()
            self._load -= self._cost(item)
            self._cond.notify_all()
            return item

    def get_nowait(self) -> Any:
        """:meth:`get` without waiting."""
        return self.get(timeout=0)

    def close(self) -> None:
        """No more items: wake every waiter; getters drain what is left, then raise :class:`Closed` (idempotent)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def qsize(self) -> int:
        """Items waiting now."""
        with self._cond:
            return len(self._items)

    __len__ = qsize


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"{name} must be a positive number, got {value!r}")


class DropOldestQueue(_BoundedQueue):
    """At most ``maxsize`` items; a put into a full queue drops the oldest item and counts it in ``dropped``."""

    def __init__(self, maxsize: int = 8) -> None:
        _check_positive("maxsize", maxsize)
        super().__init__(int(maxsize))
        self.maxsize = int(maxsize)
        self.dropped = 0

    def _cost(self, item: Any) -> int:
        return 0 if isinstance(item, EndOfStream) else 1

    def _on_drop(self, item: Any, cost: int) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 100 == 0:
            log.debug("video queue full: %d frames dropped so far (oldest first)", self.dropped)


class AudioQueue(_BoundedQueue):
    """At most ``max_seconds`` of audio at ``sample_rate``; an overflow drops the oldest chunks, counted.

    ``overflow_samples`` / ``overflow_seconds`` total what was dropped, ``overflow_bursts`` how many separate
    overflows happened (a burst ends with the first put that fits); each burst logs one warning.  A single chunk
    longer than the whole bound is still accepted (everything older is dropped).
    """

    def __init__(self, max_seconds: float = 10.0, *, sample_rate: int = 16_000) -> None:
        _check_positive("max_seconds", max_seconds)
        _check_positive("sample_rate", sample_rate)
        super().__init__(max(1, int(round(max_seconds * sample_rate))))
        self.max_seconds = float(max_seconds)
        self.sample_rate = int(sample_rate)
        self.overflow_samples = 0
        self.overflow_bursts = 0
        self._in_burst = False

    @property
    def overflow_seconds(self) -> float:
        """Seconds of audio dropped by overflows so far."""
        return self.overflow_samples / self.sample_rate

    @property
    def buffered_seconds(self) -> float:
        """Seconds of audio waiting now."""
        with self._cond:
            return self._load / self.sample_rate

    def _cost(self, item: Any) -> int:
        return 0 if isinstance(item, EndOfStream) else int(len(item[1]))

    def _on_drop(self, item: Any, cost: int) -> None:
        self.overflow_samples += cost
        if not self._in_burst:
            self._in_burst = True
            self.overflow_bursts += 1
            log.warning("audio queue overflow (more than %.1f s waiting): dropping the oldest audio; the consumer "
                        "is too slow; the loss is counted and reported", self.max_seconds)

    def _on_fit(self) -> None:
        if self._in_burst:
            self._in_burst = False
            log.warning("audio queue overflow ended: %.3f s of audio dropped in total (%d bursts)",
                        self.overflow_seconds, self.overflow_bursts)
