"""Audio decoding and media probing through the ``ffmpeg`` / ``ffprobe`` executables (run path; numpy only).

:func:`read_audio` decodes any container and codec ffmpeg knows (mp4/AAC, FLAC, WAV, MP3, ...) to float32 mono
at 16 kHz by piping ``ffmpeg -f f32le -ac 1 -ar 16000 -`` into numpy: no temporary files.  Where ffmpeg is not
installed, PCM WAV files still decode through the standard ``wave`` module.  :class:`AudioFileStream` replays a
long file chunk by chunk from one ffmpeg process, and :func:`probe` reads a file's streams with ``ffprobe``.

Every failure is an :class:`~edge.errors.InputError` that names the file and says what to do.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import wave
from collections import deque
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edge.errors import InputError

log = logging.getLogger("edge")

#: The rate every audio model of the project consumes, in Hz.
SAMPLE_RATE = 16_000
#: Samples per chunk of :class:`AudioFileStream` (32 ms at 16 kHz, the size a VAD takes).
CHUNK = 512
#: Executables used; module attributes so a test (or an unusual install) can point them elsewhere.
FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"

_INSTALL_HINT = "install it with `apt-get install ffmpeg` (Debian/Ubuntu) or `brew install ffmpeg` (macOS)"
#: ffmpeg stderr phrases that mean the input ended early although ffmpeg exits with status 0.
_TRUNCATION_SIGNS = ("partial file", "truncat", "end of file", "moov atom not found")
_NO_AUDIO_SIGNS = ("matches no streams", "does not contain any stream")
_BYTES_PER_SAMPLE = 4  # f32le


def _existing(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"media file not found: {str(p)!r}; check the path (relative paths start at {Path.cwd()})")
    if p.is_dir():
        raise InputError(f"{str(p)!r} is a folder, not a media file")
    return p


def tool_path(name: str) -> str | None:
    """Absolute path of the executable ``name`` (``FFMPEG`` or ``FFPROBE``), or None where it is not installed."""
    return shutil.which(name)


def _require_tool(name: str, path: Path, why: str) -> str:
    exe = tool_path(name)
    if exe is None:
        raise InputError(f"cannot {why} {str(path)!r}: the {name!r} program was not found on PATH; {_INSTALL_HINT}")
    return exe


def _decode_command(exe: str, path: Path, sample_rate: int) -> list[str]:
    return [exe, "-nostdin", "-hide_banner", "-nostats", "-v", "error", "-i", str(path),
            "-map", "0:a:0", "-vn", "-f", "f32le", "-ac", "1", "-ar", str(int(sample_rate)), "-"]


def _check_rate(sample_rate: int) -> int:
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise InputError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


def _decode_error(path: Path, returncode: int, stderr_lines: list[str]) -> InputError | None:
    """The error a finished ffmpeg run means, or None when the decode is good (other stderr lines are logged)."""
    text = "\n".join(stderr_lines).lower()
    last = stderr_lines[-1] if stderr_lines else f"ffmpeg exited with status {returncode}"
    if any(sign in text for sign in _NO_AUDIO_SIGNS):
        return _no_audio_error(path)
    if returncode != 0:
        return InputError(f"cannot decode audio of {str(path)!r}: the file is corrupt, truncated or not a media "
                          f"file ffmpeg knows (ffmpeg: {last}); check it with `ffprobe {path}`")
    if any(sign in text for sign in _TRUNCATION_SIGNS):
        return InputError(f"the audio of {str(path)!r} is truncated or corrupt; decoding stopped early "
                          f"(ffmpeg: {last})")
    for line in stderr_lines:
        log.warning("ffmpeg decoding %s: %s", path, line)
    return None


def _no_audio_error(path: Path) -> InputError:
    """ffmpeg found no audio stream: say whether the file is a silent video or no media at all."""
    why = describe_failure(path)  # '' for a readable video (or where ffprobe is absent)
    if why:
        return InputError(f"{str(path)!r} is not an audio or video file ({why}); "
                          "give a media file such as mp4, mkv, webm, wav, flac or mp3")
    return InputError(f"{str(path)!r} has no audio stream (e.g. a video recorded without sound); "
                      "give a file with an audio track, or run without the audio modality")


def _to_samples(raw: bytes) -> np.ndarray:
    usable = len(raw) - len(raw) % _BYTES_PER_SAMPLE
    x = np.frombuffer(raw[:usable], dtype="<f4").astype(np.float32)
    return np.clip(x, -1.0, 1.0, out=x)


def read_audio(path: str | Path, *, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of ``path`` -> (float32 mono samples in [-1, 1], ``sample_rate``).

    Uses the ``ffmpeg`` program for any format it knows; without ffmpeg, PCM WAV files decode through the
    ``wave`` module (resampled in numpy).  Raises :class:`InputError` for a missing file, a missing ffmpeg,
    a file without an audio stream, or a corrupt or truncated file (with ffmpeg's own last message).
    """
    p = _existing(path)
    sample_rate = _check_rate(sample_rate)
    exe = tool_path(FFMPEG)
    if exe is None:
        if _is_wav(p):
            log.debug("ffmpeg not found; decoding %s with the wave module", p)
            return read_wav(p, sample_rate=sample_rate), sample_rate
        exe = _require_tool(FFMPEG, p, "decode the audio of")  # raises, naming the install command
    proc = subprocess.run(_decode_command(exe, p, sample_rate), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    error = _decode_error(p, proc.returncode, lines)
    if error is not None:
        raise error
    return _to_samples(proc.stdout), sample_rate


def _is_wav(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def read_wav(path: str | Path, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a PCM WAV file (8, 16 or 32 bit) with the standard ``wave`` module -> float32 mono at ``sample_rate``.

    The fallback for machines without ffmpeg; channels are averaged, the rate converted with
    :func:`edge.features.audio_pre.resample` (windowed-sinc polyphase).
    """
    from edge.features.audio_pre import resample, to_mono

    p = _existing(path)
    sample_rate = _check_rate(sample_rate)
    try:
        with wave.open(str(p), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise InputError(f"cannot read {str(p)!r} as a PCM WAV file ({exc}); install ffmpeg to decode other "
                         f"formats: {_INSTALL_HINT}") from exc
    dtypes = {1: np.uint8, 2: np.dtype("<i2"), 4: np.dtype("<i4")}
    if width not in dtypes:
        raise InputError(f"{str(p)!r} holds {8 * width}-bit samples; without ffmpeg only 8, 16 and 32-bit PCM WAV "
                         f"decodes; {_INSTALL_HINT}")
    usable = len(raw) - len(raw) % (width * channels)
    pcm = np.frombuffer(raw[:usable], dtype=dtypes[width]).reshape(-1, channels)
    x = to_mono(pcm.astype(pcm.dtype.newbyteorder("=")))
    return resample(x, rate, sample_rate) if rate != sample_rate else x


class _StderrTail:
    """Drains a subprocess's stderr in a daemon thread (so it never blocks), keeping its last lines."""

    def __init__(self, stream: Any, keep: int = 20) -> None:
        self.lines: deque[str] = deque(maxlen=keep)
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True, name="edge-ffmpeg-stderr")
        self._thread.start()

    def _drain(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self.lines.append(line)

    def join(self, timeout: float = 5.0) -> list[str]:
        self._thread.join(timeout)
        return list(self.lines)


class AudioFileStream:
    """Iterate over ``(t_start_seconds, chunk)`` of a media file's audio, decoded progressively by one ffmpeg process.

    Chunks are float32 mono ``chunk`` samples at ``sample_rate`` (the last one may be shorter); their concatenation
    equals :func:`read_audio` of the same file exactly.  A truncated or corrupt file raises :class:`InputError`
    after every chunk that decoded has been yielded.  Use it as a context manager, or call :meth:`close`: the
    ffmpeg process is killed and reaped.  Without ffmpeg, a PCM WAV file is read whole and then chunked.
    """

    _process: subprocess.Popen | None = None  # class default, so close() works on a half-made object

    def __init__(self, path: str | Path, *, sample_rate: int = SAMPLE_RATE, chunk: int = CHUNK) -> None:
        self.path = _existing(path)
        self.sample_rate = _check_rate(sample_rate)
        if not isinstance(chunk, (int, np.integer)) or isinstance(chunk, bool) or chunk <= 0:
            raise InputError(f"chunk must be a positive number of samples, got {chunk!r}")
        self.chunk = int(chunk)
        self._position = 0  # samples yielded so far
        self._process: subprocess.Popen | None = None
        self._stderr: _StderrTail | None = None
        self._samples: np.ndarray | None = None  # the wave-module fallback
        self._done = False
        exe = tool_path(FFMPEG)
        if exe is None:
            if not _is_wav(self.path):
                _require_tool(FFMPEG, self.path, "decode the audio of")
            self._samples = read_wav(self.path, sample_rate=self.sample_rate)
            return
        self._process = subprocess.Popen(_decode_command(exe, self.path, self.sample_rate), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self._stderr = _StderrTail(self._process.stderr)

    @property
    def pid(self) -> int | None:
        """Process id of the ffmpeg decoder (None on the WAV fallback)."""
        return None if self._process is None else self._process.pid

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        return self

    def __next__(self) -> tuple[float, np.ndarray]:
        if self._done:
            raise StopIteration
        if self._samples is not None:
            x = self._samples[self._position:self._position + self.chunk]
        else:
            x = _to_samples(self._read(self.chunk * _BYTES_PER_SAMPLE))
        if x.size == 0:
            self._finish()
            raise StopIteration
        t = self._position / self.sample_rate
        self._position += x.size
        return t, x

    def _read(self, n: int) -> bytes:
        if self._process is None or self._process.stdout is None:  # closed while iterating
            return b""
        parts, got = [], 0
        while got < n:
            part = self._process.stdout.read(n - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _finish(self) -> None:
        """End of data: reap ffmpeg and raise what its exit status and messages mean."""
        self._done = True
        if self._process is None:
            return
        returncode = self._process.wait()
        lines = self._stderr.join() if self._stderr is not None else []
        self.close()
        error = _decode_error(self.path, returncode, lines)
        if error is not None:
            t = self._position / self.sample_rate
            raise InputError(f"{error} (decoded audio ends at {t:.3f} s)")

    def close(self) -> None:
        """Stop decoding: kill ffmpeg if it is still running, reap it and close its pipes (idempotent)."""
        self._done = True
        proc, self._process = self._process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if self._stderr is not None:
            self._stderr.join(timeout=2.0)  # the pipe is at EOF once ffmpeg is gone
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> AudioFileStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to clean up with  # noqa: BLE001
            pass


def probe(path: str | Path) -> dict[str, Any]:
    """Describe a media file with ``ffprobe -of json``.

    Returns ``{"streams": [...], "format": {...}, "duration": seconds or None, "has_audio": bool,
    "has_video": bool}``; ``streams`` and ``format`` are ffprobe's own records.  Raises :class:`InputError` when
    the file is missing, ffprobe is not installed, or ffprobe cannot read the file.
    """
    p = _existing(path)
    info, failure = _ffprobe(p)
    if info is None:
        raise InputError(f"ffprobe cannot read {str(p)!r}: it is not a media file or it is corrupt "
                         f"(ffprobe: {failure})")
    streams = info.get("streams", [])
    fmt = info.get("format", {})
    duration = fmt.get("duration")
    kinds = {s.get("codec_type") for s in streams if not s.get("disposition", {}).get("attached_pic")}
    return {
        "streams": streams,
        "format": fmt,
        "duration": float(duration) if duration not in (None, "N/A") else None,
        "has_audio": "audio" in kinds,
        "has_video": "video" in kinds,
    }


def _ffprobe(path: Path) -> tuple[dict[str, Any] | None, str]:
    """ffprobe's JSON record of ``path``, or (None, ffprobe's last message) where it cannot read the file."""
    exe = _require_tool(FFPROBE, path, "probe")
    proc = subprocess.run([exe, "-v", "error", "-of", "json", "-show_streams", "-show_format", str(path)],
                          stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if proc.returncode != 0:
        return None, (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
    try:
        return json.loads(proc.stdout.decode("utf-8", "replace") or "{}"), ""
    except json.JSONDecodeError as exc:
        return None, f"unreadable JSON output ({exc})"


def describe_failure(path: str | Path) -> str:
    """One short phrase on why ``path`` is not readable media, from ffprobe ('' where ffprobe is absent or happy)."""
    p = Path(path)
    if tool_path(FFPROBE) is None or not p.is_file():
        return ""
    info, failure = _ffprobe(p)
    if info is None:
        return f"ffprobe: {failure}"
    if info.get("format", {}).get("format_name") == "tty":
        return "ffmpeg reads it as plain text rendered as video, not as a video file"
    kinds = sorted({s.get("codec_type", "?") for s in info.get("streams", [])})
    if "video" in kinds:
        return ""
    return "ffprobe finds no video stream in it" + (f", only {', '.join(kinds)}" if kinds else "")
