"""Browser-like load on ``edge-serve``: Python clients over real sockets replaying a clip as a kiosk page sends it
(JPEG frames at the session's frame rate, 100 ms PCM16 chunks), at real time or as fast as the server takes them.

:func:`load_clip` decodes a clip once into the messages a client sends; :func:`replay_session` runs one session
and measures it (end-to-end latency as the server reports it, and the delay the client sees between an
estimate's media time and its arrival); :func:`run_sessions` runs N at once.  Used by ``scripts/bench_serve.py``
and the tests.  Never imports torch.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.client import AsyncClient, jpeg

CHUNK_S = 0.1  # audio per message, as the page sends it


@dataclass(frozen=True)
class ClipMedia:
    """A clip as a client sends it: (media time, JPEG) frames and 16 kHz int16 mono audio."""

    frames: tuple[tuple[float, bytes], ...]
    audio: np.ndarray
    duration: float
    fps: float

    def schedule(self, loops: int = 1, chunk_s: float = CHUNK_S) -> list[tuple[float, bytes, float, bytes]]:
        """(due, kind, capture time, payload) in sending order for ``loops`` back-to-back plays: a frame is due at
        its capture time, an audio chunk once its last sample was captured (ties: audio first)."""
        items = []
        chunk = int(round(chunk_s * 16_000))
        for k in range(loops):
            base = k * self.duration
            for t, data in self.frames:
                items.append((base + t, b"V", base + t, data))
            for i in range(0, len(self.audio), chunk):
                part = self.audio[i:i + chunk]
                t = base + i / 16_000
                items.append((t + len(part) / 16_000, b"A", t, part.astype("<i2").tobytes()))
        items.sort(key=lambda x: (x[0], x[1] != b"A"))
        return items


def load_clip(path: str | Path, *, fps: float = 8.0, width: int = 640, quality: int = 80) -> ClipMedia:
    """Decode ``path`` (video with an audio track) into what a kiosk page would send."""
    import cv2

    from edge.media import read_audio
    from edge.video import VideoFileReader

    frames = []
    for t, rgb in VideoFileReader(path, fps=fps):
        if rgb.shape[1] > width:
            h = int(round(rgb.shape[0] * width / rgb.shape[1]))
            rgb = cv2.resize(rgb, (width, h), interpolation=cv2.INTER_AREA)
        frames.append((float(t), jpeg(rgb, quality)))
    samples, _ = read_audio(path)
    audio = np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768.0).astype(np.int16)
    duration = max(len(audio) / 16_000, frames[-1][0] + 1.0 / fps if frames else 0.0)
    return ClipMedia(tuple(frames), audio, duration, fps)


@dataclass
class SessionReport:
    results: int = 0
    end_to_end_ms: list[float] = field(default_factory=list)
    client_delay_ms: list[float] = field(default_factory=list)
    all_three: int = 0  # results with text, audio and vision all available
    errors: list[dict[str, Any]] = field(default_factory=list)
    closed: dict[str, Any] | None = None
    indices: list[int] = field(default_factory=list)
    sent: int = 0
    failure: str = ""


async def replay_session(url: str, clip: ClipMedia, *, loops: int = 1, realtime: bool = True,
                         token: str | None = None, config: dict[str, Any] | None = None,
                         skip_results: int = 0) -> SessionReport:
    """One session: send the clip ``loops`` times (paced at real time, or as fast as the server takes it), then
    session.close, reading results all along; latencies of the first ``skip_results`` results are not kept
    (warm-up)."""
    report = SessionReport()
    client_base = random.uniform(-1e4, 1e4)  # the client's clock has its own origin
    try:
        async with AsyncClient(url, token=token) as client:
            if config:
                await client.update(**config)
            start = time.monotonic()

            def client_now() -> float:
                return client_base + time.monotonic() - start

            async def send() -> None:
                for due, kind, t, payload in clip.schedule(loops):
                    if realtime:
                        delay = start + due - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    if kind == b"V":
                        await client.send_image(client_base + t, payload)
                    else:
                        await client.send_audio(client_base + t, payload)
                    report.sent += 1
                await client.end()

            sender = asyncio.create_task(send())
            async for result in client.results():
                report.results += 1
                report.indices.append(result["index"])
                if report.results <= skip_results:
                    continue
                e2e = result["latency_ms"].get("end_to_end")
                if e2e is not None:
                    report.end_to_end_ms.append(float(e2e))
                if realtime:
                    report.client_delay_ms.append(1e3 * (client_now() - result["media_time"]))
                report.all_three += all(result["available"].values())
            await sender
            report.errors, report.closed = list(client.errors), client.closed
    except Exception as exc:  # noqa: BLE001 - a failed session is a measurement, reported in the JSON
        report.failure = f"{type(exc).__name__}: {exc}"
    return report


async def run_sessions(url: str, clip: ClipMedia, n: int, **kwargs: Any) -> list[SessionReport]:
    """``n`` sessions at once, started 0.1 s apart (as kiosks do not all start in the same millisecond)."""

    async def one(k: int) -> SessionReport:
        await asyncio.sleep(0.1 * k)
        return await replay_session(url, clip, **kwargs)

    return list(await asyncio.gather(*(one(k) for k in range(n))))


def percentile(values: list[float], q: float) -> float | None:
    return None if not values else round(float(np.percentile(values, q)), 1)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (what ``uptime`` shows): the CPU is shared with other work."""
    import os

    return [round(v, 2) for v in os.getloadavg()]
