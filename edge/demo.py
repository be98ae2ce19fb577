"""A short demo clip made on the spot, so the live loop runs on a machine with no camera and no downloads.

The picture is a real face photograph (``grace_hopper.jpg``, the public-domain U.S. Navy portrait of Rear Admiral
Grace Hopper, as matplotlib's sample data has it; shipped in ``edge/assets/demo/``), gently animated with OpenCV: a
slow zoom and pan (Ken Burns), a head tilt of a degree or two and a slight breathing scale, the face kept large and
frontal. The sound is a few short English sentences with clear emotion content (a happy part, then a sad and an angry one) spoken by the
``espeak-ng`` program, with pauses between them so a voice-activity detector and a speech recogniser segment
them. ``ffmpeg`` muxes both into an H.264 + AAC mp4.

:func:`make_demo_clip` writes the clip (atomically: a temporary file in the same folder, then a rename) and, by
default, keeps it in a cache named by a hash of its parameters, so later calls return at once. numpy, OpenCV and
subprocesses only: this module never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import secrets
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from edge._lazy import lazy_import
from edge.errors import InputError

__all__ = ["DEFAULT_SCRIPT", "DEMO_VERSION", "demo_clip_path", "make_demo_clip"]

log = logging.getLogger("edge")

#: Bumped whenever the clip this module makes changes for the same parameters (it is part of the cache name).
DEMO_VERSION = 1

#: What the demo says: a happy part, then a sad and an angry one, spoken with pauses between the sentences (chosen
#: among similar ones for being recognised by PocketSphinx after the AAC round trip).
DEFAULT_SCRIPT: tuple[str, ...] = (
    "I am so happy today!",
    "This is wonderful news!",
    "Now I feel sad and lonely.",
    "I am really angry with you!",
)

DEFAULT_FPS = 25
DEFAULT_SIZE = (640, 480)  # width, height in pixels
#: espeak-ng voice: US English with the female variant f3, which PocketSphinx's US model recognises far better
#: than the default voice (word error rate ~0.2 against ~0.6 on short emotional sentences).
VOICE = "en-us+f3"
WORDS_PER_MINUTE = 150
LEAD_IN_S = 0.4  # silence before the first sentence
PAUSE_S = 0.6  # silence between sentences (espeak-ng's own leading and trailing silence is trimmed)
TAIL_S = 0.5  # silence after the last sentence
_QUIET = 200  # |sample| below this (int16) counts as silence when trimming a sentence's ends
_KEEP_S = 0.05  # kept around a trimmed sentence
CACHE_ENV = "LFMIM_EDGE_CACHE"

#: The portrait (shipped in the package), and where its face lies (pixels of the 512 x 600 image): the centre
#: of the view at the start and at the end of the clip, and the width of the view (the face is ~210 px wide).
PORTRAIT = "grace_hopper.jpg"
_VIEW_START = ((258.0, 240.0), 470.0)
_VIEW_END = ((266.0, 236.0), 400.0)
_PAN_JITTER_PX = 6.0  # the seed moves the end of the pan by up to this much
_TILT_DEG, _TILT_PERIOD_S = 1.5, 5.0
_BREATH, _BREATH_PERIOD_S = 0.01, 3.2

_APT = "sudo apt-get install espeak-ng ffmpeg"
_NEEDED_FOR = {"espeak-ng": "speaks the demo's sentences", "ffmpeg": "encodes the clip"}


# -- where the clip goes ---------------------------------------------------------------------------------
def _check(sentences: Sequence[str] | str, fps: float, size: tuple[int, int]) -> tuple[tuple[str, ...], int, int]:
    if isinstance(sentences, str):
        sentences = (sentences,)
    sentences = tuple(str(s).strip() for s in sentences)
    if not sentences or not all(sentences):
        raise InputError(f"the demo needs at least one non-empty sentence to speak, got {list(sentences)!r}")
    if not (isinstance(fps, (int, float)) and 1 <= fps <= 120):
        raise InputError(f"fps must be a number between 1 and 120, got {fps!r}")
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"size must be (width, height) in pixels, got {size!r}") from None
    if width < 64 or height < 64 or width % 2 or height % 2 or not 0.5 <= width / height <= 2.0:
        raise InputError(f"size must be even (width, height) of at least 64 pixels with an aspect between 1:2 and "
                         f"2:1 (H.264 in yuv420p), got {size!r}; the default is {DEFAULT_SIZE}")
    return sentences, width, height


def cache_dir() -> Path:
    """``$LFMIM_EDGE_CACHE`` or ``~/.cache/lfmim-edge``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lfmim-edge").expanduser()


def demo_clip_path(*, sentences: Sequence[str] = DEFAULT_SCRIPT, fps: float = DEFAULT_FPS,
                   size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0) -> Path:
    """The cached clip for these parameters: ``<cache>/demo-<hash>.mp4`` (see :func:`cache_dir`)."""
    sentences, width, height = _check(sentences, fps, size)
    key = json.dumps({"version": DEMO_VERSION, "sentences": sentences, "fps": fps, "size": [width, height],
                      "seed": int(seed), "voice": VOICE, "wpm": WORDS_PER_MINUTE}, sort_keys=True)
    return cache_dir() / f"demo-{hashlib.sha256(key.encode()).hexdigest()[:12]}.mp4"


# -- tools -----------------------------------------------------------------------------------------------
def _tools() -> dict[str, str]:
    """Absolute paths of espeak-ng and ffmpeg; an :class:`InputError` naming whichever is missing."""
    found = {name: shutil.which(name) for name in _NEEDED_FOR}
    missing = [name for name, exe in found.items() if exe is None]
    if missing:
        names = " and ".join(repr(name) for name in missing)
        why = "; ".join(f"{name} {_NEEDED_FOR[name]}" for name in missing)
        raise InputError(f"the demo clip needs the {names} program{'s' if len(missing) > 1 else ''}, not found on "
                         f"PATH ({why}); install with `{_APT}` (Debian/Ubuntu) or `brew install espeak-ng ffmpeg` "
                         "(macOS)")
    return {name: str(exe) for name, exe in found.items()}


def _tail(stderr: bytes, lines: int = 3) -> str:
    text = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return " | ".join(text[-lines:]) or "no message"


def _run(cmd: list[str], *, what: str, data: bytes | None = None) -> bytes:
    proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
    if proc.returncode != 0:
        raise InputError(f"{what} failed ({Path(cmd[0]).name} exited with {proc.returncode}: {_tail(proc.stderr)})")
    return proc.stdout


# -- sound -----------------------------------------------------------------------------------------------
def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise InputError(f"espeak-ng wrote {f.getsampwidth() * 8}-bit audio to {path}; 16-bit was expected")
        rate, channels = f.getframerate(), f.getnchannels()
        samples = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    return samples.reshape(-1, channels)[:, 0].copy(), rate


def _trim(samples: np.ndarray, rate: int) -> np.ndarray:
    """A sentence without the silence espeak-ng puts around it (``_KEEP_S`` kept on each side)."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) >= _QUIET)
    if loud.size == 0:
        raise InputError("espeak-ng produced silence; check that its voice "
                         f"{VOICE!r} is installed (`espeak-ng --voices=en`)")
    keep = round(_KEEP_S * rate)
    return samples[max(loud[0] - keep, 0): loud[-1] + keep + 1]


def speak(sentences: Sequence[str], workdir: Path, *, espeak: str) -> tuple[np.ndarray, int]:
    """Each sentence spoken by espeak-ng, with silences before, between and after: (int16 mono, sample rate)."""
    parts: list[np.ndarray] = []
    rate = 0
    for i, text in enumerate(sentences):
        wav = workdir / f"sentence-{i}.wav"
        # The text goes in on stdin, so a sentence that starts with "-" is never taken for an option.
        _run([espeak, "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", str(wav)], data=text.encode("utf-8"),
             what=f"espeak-ng speaking {text!r}")
        samples, this_rate = _read_wav(wav)
        samples = _trim(samples, this_rate)
        if rate and this_rate != rate:
            raise InputError(f"espeak-ng changed its sample rate between sentences ({rate} -> {this_rate} Hz)")
        rate = this_rate
        parts += [np.zeros(round((LEAD_IN_S if i == 0 else PAUSE_S) * rate), np.int16), samples]
    parts.append(np.zeros(round(TAIL_S * rate), np.int16))
    return np.concatenate(parts), rate


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.astype("<i2").tobytes())


# -- picture ---------------------------------------------------------------------------------------------
def portrait_path() -> Path:
    """The Grace Hopper portrait that ships in the package (``asset:demo/grace_hopper.jpg``, hash-checked)."""
    from edge.assets import asset_path

    return asset_path(f"asset:demo/{PORTRAIT}")


def _camera(t: float, duration: float, width: int, height: int, phases: np.ndarray,
            pan_end: np.ndarray) -> np.ndarray:
    """The 2 x 3 affine map from portrait pixels to frame pixels at time ``t`` (seconds)."""
    progress = 0.5 - 0.5 * math.cos(math.pi * min(t / duration, 1.0))  # eased: slow start, slow end
    (c0, w0), (c1, w1) = _VIEW_START, _VIEW_END
    centre = (1 - progress) * np.asarray(c0) + progress * (np.asarray(c1) + pan_end)
    view_width = (1 - progress) * w0 + progress * w1
    view_width = min(view_width, 512.0 * 0.96, 600.0 * 0.96 * width / height)  # stay inside the portrait
    scale = width / view_width * (1 + _BREATH * math.sin(2 * math.pi * t / _BREATH_PERIOD_S + phases[0]))
    angle = _TILT_DEG * math.sin(2 * math.pi * t / _TILT_PERIOD_S + phases[1])
    matrix = lazy_import("cv2").getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    matrix[:, 2] += (width / 2 - centre[0], height / 2 - centre[1])  # the view's centre to the frame's centre
    return matrix


def animate(image: np.ndarray, frames: int, *, fps: float, size: tuple[int, int],
            seed: int = 0) -> Iterator[np.ndarray]:
    """``frames`` BGR frames of ``size`` (width, height): the portrait slowly zooming, panning, tilting, breathing."""
    cv2 = lazy_import("cv2", purpose="the demo clip")
    width, height = size
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * math.pi, size=2)
    pan_end = rng.uniform(-_PAN_JITTER_PX, _PAN_JITTER_PX, size=2)
    duration = max((frames - 1) / fps, 1e-6)
    for i in range(frames):
        matrix = _camera(i / fps, duration, width, height, phases, pan_end)
        yield cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REFLECT101)


# -- encoding --------------------------------------------------------------------------------------------
def _video_codec(ffmpeg: str) -> list[str]:
    encoders = _run([ffmpeg, "-hide_banner", "-nostdin", "-encoders"], what="listing ffmpeg's encoders").decode()
    if " libx264 " in encoders:
        return ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]
    log.warning("this ffmpeg has no libx264; the demo clip uses MPEG-4 part 2 video instead of H.264")
    return ["-c:v", "mpeg4", "-q:v", "3", "-pix_fmt", "yuv420p"]


def _encode(frames: Iterator[np.ndarray], wav: Path, out: Path, *, ffmpeg: str, fps: float,
            size: tuple[int, int]) -> None:
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{size[0]}x{size[1]}", "-r", f"{fps:g}", "-i", "-",
           "-i", str(wav), "-map", "0:v:0", "-map", "1:a:0", *_video_codec(ffmpeg),
           "-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart", "-f", "mp4", str(out)]
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: ffmpeg never blocks on a full stderr pipe
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
        try:
            for frame in frames:
                proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            pass  # ffmpeg stopped early; its message follows
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            code = proc.wait()
        if code != 0:
            errors.seek(0)
            raise InputError(f"ffmpeg could not write the demo clip {str(out)!r} (exit status {code}: "
                             f"{_tail(errors.read())})")


def make_demo_clip(out: str | Path | None = None, *, sentences: Sequence[str] = DEFAULT_SCRIPT,
                   fps: float = DEFAULT_FPS, size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0,
                   overwrite: bool = False) -> Path:
    """Make the demo clip and return its path.

    With ``out`` None the clip goes to :func:`demo_clip_path` and an existing one is reused unless ``overwrite``;
    an explicit ``out`` that exists is replaced only with ``overwrite``. Raises :class:`InputError` when
    espeak-ng or ffmpeg is missing or fails (with its last message).
    """
    sentences, width, height = _check(sentences, fps, size)
    if out is None:
        path = demo_clip_path(sentences=sentences, fps=fps, size=(width, height), seed=seed)
        if path.is_file() and not overwrite:
            log.info("demo clip already made: %s", path)
            return path
    else:
        path = Path(out).expanduser()
        if path.is_dir():
            raise InputError(f"{str(path)!r} is a folder; give the demo clip a file name such as demo.mp4")
        if path.exists() and not overwrite:
            raise InputError(f"{str(path)!r} already exists; choose another name or pass "
                             "overwrite=True (edge-demo --overwrite) to replace it")
    tools = _tools()
    cv2 = lazy_import("cv2", purpose="the demo clip")
    portrait = portrait_path()
    image = cv2.imread(str(portrait), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"OpenCV could not read the portrait {str(portrait)!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot make the folder {str(path.parent)!r} for the demo clip ({exc.strerror or exc}); "
                         "choose another place") from None
    log.info("making the demo clip %s (%d sentences)", path, len(sentences))
    # Not mkstemp: ffmpeg creates the file, so it gets the usual permissions (mkstemp's are owner-only).
    partial = path.with_name(f".{path.stem}-{os.getpid()}-{secrets.token_hex(4)}.part.mp4")
    try:
        with tempfile.TemporaryDirectory(prefix="lfmim-demo-") as work:
            samples, rate = speak(sentences, Path(work), espeak=tools["espeak-ng"])
            frames = math.ceil(samples.size / rate * fps)
            total = round(frames / fps * rate)  # the sound padded to exactly the video's length
            samples = np.concatenate([samples, np.zeros(max(total - samples.size, 0), np.int16)])[:total]
            wav = Path(work) / "speech.wav"
            _write_wav(wav, samples, rate)
            _encode(animate(image, frames, fps=fps, size=(width, height), seed=seed), wav, partial,
                    ffmpeg=tools["ffmpeg"], fps=fps, size=(width, height))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    log.info("demo clip: %s (%.1f s, %d frames)", path, frames / fps, frames)
    return path


def describe(path: str | Path) -> dict[str, Any]:
    """Duration, frame size and rate of a clip (OpenCV), for the CLI's summary line."""
    cv2 = lazy_import("cv2", purpose="reading the demo clip")
    cap = cv2.VideoCapture(str(path))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        return {"width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                "fps": fps, "frames": count, "seconds": count / fps if fps else 0.0}
    finally:
        cap.release()
