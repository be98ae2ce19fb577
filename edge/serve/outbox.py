"""One client's send queue: results bounded (a slow reader loses the *oldest* results, counted), control messages
(errors, session.*) kept ahead of results and bounded too; one task per connection sends them in order."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Mapping

from edge.serve.protocol import dumps

log = logging.getLogger("edge")


class Outbox:
    """``put_result`` / ``put_control`` from the event loop's thread; :meth:`pump` sends until :meth:`close`."""

    def __init__(self, capacity: int = 16, control_capacity: int = 256) -> None:
        if capacity < 1 or control_capacity < 1:
            raise ValueError("outbox capacities must be at least 1")
        self.capacity, self.control_capacity = int(capacity), int(control_capacity)
        self._results: deque[Mapping[str, Any]] = deque()
        self._control: deque[Mapping[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self.results_dropped = self.control_dropped = self.sent = 0

    def put_result(self, message: Mapping[str, Any]) -> None:
        if self._closed:
            return
        while len(self._results) >= self.capacity:
            self._results.popleft()
            self.results_dropped += 1
        self._results.append(message)
        self._signal()

    def put_control(self, message: Mapping[str, Any]) -> None:
        if self._closed:
            return
        while len(self._control) >= self.control_capacity:
            self._control.popleft()
            self.control_dropped += 1
        self._control.append(message)
        self._signal()

    def _signal(self) -> None:
        self._idle.clear()
        self._wake.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def pending(self) -> int:
        return len(self._results) + len(self._control)

    def close(self) -> None:
        """Stop taking messages; :meth:`pump` sends what is queued, then returns."""
        self._closed = True
        self._wake.set()

    async def drained(self, timeout: float) -> bool:
        """Wait until everything queued so far was sent (True) or ``timeout`` seconds pass (False)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def pump(self, websocket: Any) -> None:
        """Send queued messages in order (control first) until closed and empty or the connection ends."""
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                if not self._control and not self._results:
                    self._idle.set()
                    if self._closed:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                message = self._control.popleft() if self._control else self._results.popleft()
                await websocket.send(dumps(message))
                self.sent += 1
        except ConnectionClosed:
            pass
        finally:
            self._idle.set()
