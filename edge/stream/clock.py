"""The one clock every sample of a run is stamped from.

Live capture and real-time replay use :class:`MonotonicClock` (``time.monotonic``, seconds); ``--speed max`` replay
uses :class:`MediaClock`, a virtual clock that shows media time and is advanced by the replay source itself, so a
run's timestamps (and everything scheduled from them) are identical run to run.  Both expose :meth:`now` and
:meth:`wait_until`, so a scheduler is written once for either.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What sources and schedulers need from a clock."""

    def now(self) -> float:
        """Current time in seconds (never decreases)."""

    def wait_until(self, t: float, timeout: float | None = None) -> bool:
        """Block until ``now() >= t`` (True) or ``timeout`` seconds of wall time pass (False)."""


class MonotonicClock:
    """Wall time from ``time.monotonic()``: the clock of live capture and real-time replay."""

    def now(self) -> float:
        return time.monotonic()

    def wait_until(self, t: float, timeout: float | None = None) -> bool:
        delay = t - time.monotonic()
        if timeout is not None and delay > timeout:
            time.sleep(max(timeout, 0.0))
            return False
        if delay > 0:
            time.sleep(delay)
        return True

    def __repr__(self) -> str:
        return "MonotonicClock()"


class MediaClock:
    """Virtual time equal to media time, advanced by the replay source (``--speed max``).

    ``now()`` is the media time up to which every sample has been delivered.  :meth:`advance` never moves it
    backwards; :meth:`wait_until` wakes when the source reaches ``t`` or when :meth:`close` says no more time
    will come (end of the media).  Thread-safe.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)
        self._closed = False
        self._cond = threading.Condition()

    def now(self) -> float:
        with self._cond:
            return self._t

    @property
    def closed(self) -> bool:
        """True once the source has ended: time will not advance any more."""
        with self._cond:
            return self._closed

    def advance(self, t: float) -> None:
        """Move media time forward to ``t`` (a smaller ``t`` is ignored) and wake the waiters it reaches."""
        with self._cond:
            if t > self._t:
                self._t = float(t)
                self._cond.notify_all()

    def close(self) -> None:
        """The media has ended: wake every waiter (their :meth:`wait_until` returns False unless reached)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_until(self, t: float, timeout: float | None = None) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self._t >= t or self._closed, timeout)
            return self._t >= t

    def __repr__(self) -> str:
        return f"MediaClock(now={self.now():.3f})"
