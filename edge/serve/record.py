"""``edge-serve --record DIR``: the one way media is ever stored.  Without it nothing a client sends touches the disk.

Per session, ``DIR/<session_id>/``: ``session.json`` (start time, options), ``audio.wav`` (PCM s16le mono 16 kHz,
its header rewritten after every chunk, so the file is valid at any moment) and ``frames/<n>_<capture time>.jpg``
(each JPEG exactly as received, written under a temporary name and renamed).  The page shows a notice while the
server records, and ``session.created`` says so (``"record": true``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import wave
from pathlib import Path
from typing import Any

from edge.errors import InputError

log = logging.getLogger("edge")


def check_record_dir(path: str) -> Path:
    """The recording folder, created if missing; an :class:`InputError` when it cannot be written."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"--record {path}: cannot write there ({exc.strerror}); give a folder you may write to") \
            from None
    return folder


class SessionRecorder:
    """Writes one session's media as it arrives (called from the session's threads; thread-safe)."""

    def __init__(self, root: Path, session_id: str, options: dict[str, Any], sample_rate: int = 16_000) -> None:
        self.folder = root / session_id
        (self.folder / "frames").mkdir(parents=True, exist_ok=True)
        meta = {"session_id": session_id, "started_unix": time.time(), "options": options,
                "audio": "audio.wav (PCM s16le mono)", "frames": "frames/<n>_<capture time s>.jpg"}
        tmp = self.folder / "session.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.folder / "session.json")
        self._fh = open(self.folder / "audio.wav", "wb")
        self._wav = wave.open(self._fh, "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate)
        self._lock = threading.Lock()
        self.frames = 0
        self.audio_samples = 0

    def audio(self, pcm16: bytes) -> None:
        with self._lock:
            if self._wav is not None:
                self._wav.writeframes(pcm16)
                self._fh.flush()  # writeframes patched the header: the file is valid with these samples
                self.audio_samples += len(pcm16) // 2

    def frame(self, t_client: float, jpeg: bytes) -> None:
        with self._lock:
            n = self.frames
            self.frames += 1
        path = self.folder / "frames" / f"{n:06d}_{t_client:.3f}.jpg"
        tmp = path.with_suffix(".jpg.tmp")
        tmp.write_bytes(jpeg)
        os.replace(tmp, path)

    def close(self) -> None:
        with self._lock:
            if self._wav is not None:
                self._wav.close()
                self._fh.close()
                self._wav = None
        log.info("recorded session to %s: %d frames, %.1f s of audio", self.folder, self.frames,
                 self.audio_samples / 16_000)
