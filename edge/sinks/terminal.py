"""The live terminal view: per-modality bars, the fused label, the transcript, latency and drops."""

from __future__ import annotations

import shutil
import sys
from typing import IO

from edge.stream.estimate import Estimate

BAR = 24
ROWS = ("fused", "text", "audio", "vision")


def render(estimate: Estimate, *, width: int | None = None) -> str:
    """A small multi-line picture of one estimate (no colours, so it reads the same in logs)."""
    width = width or shutil.get_terminal_size((100, 20)).columns
    lines = [f"t={estimate.media_time:7.2f}s  #{estimate.index:<5d} "
             f"fused: {estimate.label() or '(no evidence)'}"
             + (f" {estimate.confidence():.0%}" if estimate.confidence() is not None else "")]
    for row in ROWS:
        probs = estimate.probs.get(row)
        if probs is None:
            age = estimate.age_s.get(row) if row != "fused" else None
            lines.append(f"  {row:7s} unavailable" + ("" if age is None else f" (last evidence {age:.1f}s ago)"))
            continue
        top = max(range(len(probs)), key=probs.__getitem__)
        filled = int(round(probs[top] * BAR))
        lines.append(f"  {row:7s} {'#' * filled}{'.' * (BAR - filled)} {estimate.classes[top]:9s} {probs[top]:.2f}")
    transcript = estimate.transcript or "-"
    lines.append(f"  said: {transcript[-(width - 9):]}")
    lat = estimate.latency_ms
    e2e = lat.get("end_to_end")
    faces = estimate.faces
    lines.append(f"  latency: tick {lat.get('tick', 0):.0f} ms" + (f", end to end {e2e:.0f} ms" if e2e else "")
                 + f" | faces {faces.get('with_face', 0)}/{faces.get('frames', 0)}"
                 + f" | dropped frames {int(estimate.dropped.get('frames', 0))}"
                 + f", audio lost {estimate.dropped.get('audio_s', 0):.2f}s")
    return "\n".join(line[:width] for line in lines)


class TerminalView:
    """Redraws in place on a terminal; prints one block per estimate otherwise (pipes, logs)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._height = 0

    def __call__(self, estimate: Estimate) -> None:
        text = render(estimate)
        if self.live and self._height:
            self.stream.write(f"\x1b[{self._height}F\x1b[J")
        self.stream.write(text + "\n")
        self.stream.flush()
        self._height = text.count("\n") + 1

    def close(self) -> None:
        self.stream.flush()
