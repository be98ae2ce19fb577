"""Real media files made on the spot for tests: synthetic speech, H.264/AAC clips, truncated copies.

Needs the ``espeak-ng`` program for speech, ``sox`` or ``ffmpeg`` to resample it, and ``ffmpeg`` (with libx264 and
the native AAC encoder) for clips; the functions raise :class:`~edge.errors.InputError` naming the missing program.
Frames are piped into ffmpeg on stdin and speech through pipes: nothing is written but the outputs.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np

from edge.errors import InputError

log = logging.getLogger("edge")

SPEECH_RATE = 16_000
_APT = "apt-get install -y ffmpeg sox espeak-ng"


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise InputError(f"the {name!r} program is needed to make test media; install it with `{_APT}` "
                         f"(Debian/Ubuntu) or `brew install {name}` (macOS)")
    return exe


def _run(cmd: list[str], *, data: bytes | None = None, what: str) -> bytes:
    proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
        raise InputError(f"{what} failed ({Path(cmd[0]).name} exited with {proc.returncode}: {last})")
    return proc.stdout


def synth_speech(text: str, path: str | Path, *, voice: str = "en", rate: int = 150) -> Path:
    """Speak ``text`` with espeak-ng into ``path``: a 16 kHz mono 16-bit WAV file; returns the path.

    ``voice`` is an espeak-ng voice (``espeak-ng --voices`` lists them), ``rate`` words per minute.
    """
    if not text.strip():
        raise InputError("synth_speech needs some text to speak")
    out = Path(path)
    wav = _run([_tool("espeak-ng"), "-v", voice, "-s", str(int(rate)), "--stdout", text],
               what=f"espeak-ng (voice {voice!r})")
    if shutil.which("sox"):
        cmd = ["sox", "-t", "wav", "-", "-r", str(SPEECH_RATE), "-c", "1", "-b", "16", str(out)]
    else:
        cmd = [_tool("ffmpeg"), "-nostdin", "-v", "error", "-y", "-f", "wav", "-i", "-",
               "-ar", str(SPEECH_RATE), "-ac", "1", "-c:a", "pcm_s16le", str(out)]
    _run(cmd, data=wav, what=f"resampling speech to {SPEECH_RATE} Hz")
    return out


@lru_cache(maxsize=1)
def _video_codec() -> list[str]:
    encoders = _run([_tool("ffmpeg"), "-hide_banner", "-encoders"], what="listing ffmpeg encoders").decode()
    if " libx264 " in encoders:
        return ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    log.warning("ffmpeg has no libx264; test clips use MPEG-4 part 2 video instead of H.264")
    return ["-c:v", "mpeg4", "-q:v", "3", "-pix_fmt", "yuv420p"]


def _gradient(width: int, height: int, t: float) -> np.ndarray:
    x = np.linspace(0.0, 1.0, width)[None, :]
    y = np.linspace(0.0, 1.0, height)[:, None]
    r = 0.5 + 0.5 * np.sin(2 * math.pi * (x + 0.25 * t))
    g = 0.5 + 0.5 * np.sin(2 * math.pi * (y - 0.20 * t))
    b = 0.5 + 0.5 * np.sin(2 * math.pi * (x + y + 0.15 * t))
    return (np.stack([r + 0 * y, g + 0 * x, b], axis=-1) * 255).astype(np.uint8)


def _zoomed(image: np.ndarray, t: float, seconds: float) -> np.ndarray:
    """A gentle zoom in and out (up to 10%) with a small drift, by nearest-neighbour resampling."""
    h, w = image.shape[:2]
    phase = 0.5 - 0.5 * math.cos(2 * math.pi * t / max(seconds, 1e-6))
    scale = 1.0 - 0.10 * phase
    cy, cx = h / 2 + 0.03 * h * phase, w / 2 - 0.03 * w * phase
    rows = np.clip((cy + (np.arange(h) - h / 2) * scale).astype(int), 0, h - 1)
    cols = np.clip((cx + (np.arange(w) - w / 2) * scale).astype(int), 0, w - 1)
    return image[rows[:, None], cols[None, :]]


def make_clip(path: str | Path, *, image: np.ndarray | None = None, seconds: float = 2.0, fps: float = 25.0,
              audio_wav: str | Path | None = None, motion: bool = True, size: tuple[int, int] = (320, 240)) -> Path:
    """Write an H.264/AAC mp4 of ``seconds`` at ``fps``: ``image`` (H x W x 3 uint8 RGB) gently zooming when
    ``motion``, else a moving colour gradient of ``size`` (width, height); with ``audio_wav`` as its sound track
    (cut or left short at the clip's length), without an audio stream otherwise.  The index (moov) is written at
    the front so a truncated copy still opens.  Returns the path.
    """
    if seconds <= 0 or fps <= 0:
        raise InputError(f"seconds and fps must be positive, got {seconds} and {fps}")
    if image is not None:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"image must be RGB uint8 of shape (H, W, 3), got {image.dtype} {image.shape}")
        image = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]  # yuv420p needs even sides
        height, width = image.shape[:2]
    else:
        width, height = size[0] // 2 * 2, size[1] // 2 * 2
    if width < 2 or height < 2:
        raise InputError(f"a clip needs at least 2 x 2 pixels, got {width} x {height}")
    out = Path(path)
    cmd = [_tool("ffmpeg"), "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-"]
    if audio_wav is not None:
        if not Path(audio_wav).is_file():
            raise InputError(f"audio file not found: {str(audio_wav)!r}")
        cmd += ["-i", str(audio_wav), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "96k"]
    cmd += [*_video_codec(), "-t", f"{seconds:g}", "-movflags", "+faststart", str(out)]
    frames = int(math.ceil(seconds * fps))
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for i in range(frames):
            t = i / fps
            if image is None:
                frame = _gradient(width, height, t if motion else 0.0)
            else:
                frame = _zoomed(image, t, seconds) if motion else image
            proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # ffmpeg stopped early; its message follows
    err = proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
    proc.stderr.close()
    if proc.wait() != 0:
        raise InputError(f"ffmpeg could not write {str(out)!r}: {err[-1] if err else 'no message'}")
    return out


def remux_faststart(path: str | Path, out: str | Path) -> Path:
    """Copy an mp4 without re-encoding, its index (moov) moved to the front, so a truncated copy still opens."""
    _run([_tool("ffmpeg"), "-nostdin", "-v", "error", "-y", "-i", str(path), "-map", "0", "-c", "copy",
          "-movflags", "+faststart", str(out)], what=f"remuxing {path}")
    return Path(out)


def truncate(path: str | Path, out: str | Path, fraction: float) -> Path:
    """Write the first ``fraction`` (0 < fraction < 1) of the bytes of ``path`` to ``out``; returns ``out``."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"fraction must lie strictly between 0 and 1, got {fraction}")
    data = Path(path).read_bytes()
    Path(out).write_bytes(data[: int(len(data) * fraction)])
    return Path(out)
