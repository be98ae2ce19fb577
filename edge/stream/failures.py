"""Failures of the live loop's parts, reported at once and never swallowed (run side).

Every stage, source, encoder call and sink that raises goes through one :class:`FailureReporter`:

- one log line at once, naming the part and the error (``asr failed: RuntimeError: model crashed``);
- a :class:`Failure` record for the run: ``Recognizer.errors`` / ``failures``, the ``on_error`` callbacks, an
  ``{"type": "error", ...}`` line in the JSON Lines stream, and a non-zero exit status of ``edge-run`` at the end;
- the modalities that part feeds become *unavailable* with the failure as their reason in every estimate
  (``Estimate.reasons``) until the part works again;
- the restart policy (``--restart N``): a failed stage is restarted up to N times, waiting
  :meth:`RestartPolicy.backoff` seconds before each restart (0.25 s, doubling, at most 5 s); the restarts are counted
  in the summary.  With no restart left the part stays down for the rest of the run and its input is drained, so the
  other modalities go on.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("edge")

#: Which modalities each part feeds (a failed part makes them unavailable).
MODALITIES_OF: dict[str, tuple[str, ...]] = {
    "vision": ("vision",), "camera": ("vision",), "face_encoder": ("vision",),
    "audio": ("audio", "text"), "microphone": ("audio", "text"), "audio_encoder": ("audio",),
    "asr": ("text",), "text_encoder": ("text",),
    "lfmim": ("text", "audio", "vision", "fused"), "replay": ("text", "audio", "vision"),
}


def describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@dataclass(frozen=True)
class Failure:
    """One failure of one part of the loop."""

    part: str
    error: str
    wall_time: float
    media_time: float | None
    restarts: int  # restarts of this part before this failure
    final: bool  # no restart left: the part stays down

    @property
    def modalities(self) -> tuple[str, ...]:
        return MODALITIES_OF.get(self.part, ())

    def line(self) -> str:
        after = "; no restart left" if self.final else f"; restarting (restart {self.restarts + 1})"
        return f"{self.part} failed: {self.error}{after}"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "error", "part": self.part, "error": self.error, "media_time": self.media_time,
                "restarts": self.restarts, "final": self.final, "unavailable": list(self.modalities)}


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a failed part up to ``max_restarts`` times (0: never), after :meth:`backoff` seconds."""

    max_restarts: int = 0
    first_s: float = 0.25
    max_s: float = 5.0

    def backoff(self, restart: int) -> float:
        return min(self.first_s * 2 ** restart, self.max_s)


class FailureReporter:
    """Thread-safe record of the run's failures; ``notify(failure)`` is called for each (the recognizer delivers
    them to its callbacks and sinks)."""

    def __init__(self, policy: RestartPolicy | None = None, *, notify: Callable[[Failure], None] | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self.notify = notify
        self.failures: list[Failure] = []
        self.restarts: dict[str, int] = {}
        self._down: dict[str, Failure] = {}
        self._lock = threading.Lock()

    def report(self, part: str, error: BaseException, *, media_time: float | None = None,
               restartable: bool = True) -> bool:
        """Record a failure of ``part``; True when the part should restart (after :meth:`backoff`)."""
        with self._lock:
            done = self.restarts.get(part, 0)
            restart = restartable and done < self.policy.max_restarts
            failure = Failure(part, describe(error), time.time(), media_time, done, not restart)
            self.failures.append(failure)
            self._down[part] = failure
            if restart:
                self.restarts[part] = done + 1
        log.error("%s", failure.line())
        if self.notify is not None:
            try:
                self.notify(failure)
            except Exception:  # noqa: BLE001 - reporting must not fail the part that is failing
                log.exception("delivering the failure of %s failed", part)
        return restart

    def backoff(self, part: str) -> float:
        return self.policy.backoff(max(0, self.restarts.get(part, 1) - 1))

    def recovered(self, part: str) -> None:
        """``part`` worked again: its modalities are available again (a final failure is never cleared)."""
        if part in self._down and not self._down[part].final:
            with self._lock:
                failure = self._down.get(part)
                if failure is not None and not failure.final:
                    del self._down[part]
                    log.info("%s works again after its failure", part)

    def is_down(self, part: str) -> bool:
        failure = self._down.get(part)
        return failure is not None and failure.final

    def reasons(self) -> dict[str, str]:
        """Modality -> why it is unavailable now (the newest failure of a part that feeds it)."""
        with self._lock:
            down = sorted(self._down.values(), key=lambda f: f.wall_time)
        out: dict[str, str] = {}
        for failure in down:
            for modality in failure.modalities:
                out[modality] = f"{failure.part} failed: {failure.error}"
        return out

    @property
    def messages(self) -> list[str]:
        with self._lock:
            return [f"{f.part} failed: {f.error}" for f in self.failures]
