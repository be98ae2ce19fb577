"""Voice activity detection with Silero VAD's ONNX model on ONNX Runtime (run path; numpy only, never torch).

The silero-vad package (MIT) ships ``silero_vad.onnx`` in its ``data/`` folder but declares torch as a
dependency, so it is installed without its dependencies and the file is found without importing the package::

    pip install --no-deps silero-vad==6.2.3

The model takes one window of :data:`WINDOW` (512) samples at 16 kHz preceded by the last :data:`CONTEXT` (64)
samples of the previous window, a recurrent state of shape (2, batch, 128) and the rate; it returns the
probability that the window holds speech and the next state.

Stateless model, stateful sessions: :class:`SileroVADModel` is the loaded ONNX Runtime session (shareable between
streams and threads); :class:`SileroVAD` is one stream's recurrent state and context on top of it;
:class:`VADSegmenter` turns one stream's probabilities into :class:`SpeechStart` / :class:`SpeechEnd` events.
"""

from __future__ import annotations

import bisect
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.features.audio_pre import to_float32

log = logging.getLogger("edge")

#: The only rate the segmenter runs at, in Hz.
SAMPLE_RATE = 16_000
#: Samples per VAD window at 16 kHz (32 ms), and samples of the previous window prepended as context (4 ms).
WINDOW = 512
CONTEXT = 64
#: Recurrent state: (2, batch, STATE_SIZE).
STATE_SIZE = 128
#: The package that ships the model, its data folder and file, and how to install it without torch.
PACKAGE = "silero_vad"
MODEL_FILE = "silero_vad.onnx"
INSTALL = "pip install --no-deps silero-vad==6.2.3"


def find_model(model_path: str | Path | None = None) -> Path:
    """Path of the Silero VAD ONNX file: ``model_path`` when given, else the copy inside the silero-vad package.

    The package is located with :func:`importlib.util.find_spec` and never imported (importing it imports torch).
    Raises :class:`InputError` naming the install command when neither exists.
    """
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise InputError(f"Silero VAD model not found at {str(path)!r}; give the path of silero_vad.onnx, or "
                             f"leave it out to use the copy in the silero-vad package ({INSTALL})")
        return path
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "data" / MODEL_FILE
        if path.is_file():
            return path
    where = f" (looked in {[str(Path(f) / 'data') for f in folders]})" if folders else ""
    raise InputError(f"the Silero VAD model {MODEL_FILE} was not found{where}: install the package that ships it, "
                     f"without its torch dependency: {INSTALL}; or pass model_path=PATH/TO/{MODEL_FILE}")


class SileroVADModel:
    """The loaded Silero VAD ONNX model: a stateless function of (audio with context, state) -> (prob, state).

    One instance may serve many streams and threads (ONNX Runtime sessions are safe to run concurrently).
    ``threads`` sets ONNX Runtime's intra-op threads (1 is fastest for a model this small).
    """

    def __init__(self, model_path: str | Path | None = None, *, threads: int = 1) -> None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise InputError(f"threads must be a positive integer, got {threads!r}")
        self.path = find_model(model_path)
        ort = lazy_import("onnxruntime", purpose="voice activity detection")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own types for unreadable files
            raise InputError(f"cannot load the Silero VAD model {str(self.path)!r} ({exc}); reinstall it with "
                             f"{INSTALL}") from None
        names = {i.name for i in self.session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise InputError(f"{str(self.path)!r} is not a Silero VAD model this version runs: its inputs are "
                             f"{sorted(names)}, expected ['input', 'sr', 'state']")
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        log.debug("Silero VAD loaded from %s (%d thread(s))", self.path, threads)

    def infer(self, audio: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(batch, CONTEXT + WINDOW) float32 and state (2, batch, 128) -> (speech probabilities (batch,), next state)."""
        prob, new_state = self.session.run(None, {"input": audio, "state": state, "sr": self._sr})
        return prob.reshape(-1), new_state


class SileroVAD:
    """One stream's Silero VAD: ``vad(chunk512) -> speech probability`` of that window; :meth:`reset` between streams.

    Loads the model from ``model_path`` (default: the silero-vad package's copy), or shares an already loaded
    :class:`SileroVADModel` given as ``model``; :meth:`new_stream` gives another stream on the same model.
    """

    def __init__(self, model_path: str | Path | None = None, *, threads: int = 1,
                 model: SileroVADModel | None = None) -> None:
        self.model = model if model is not None else SileroVADModel(model_path, threads=threads)
        self.reset()

    def new_stream(self) -> SileroVAD:
        """A fresh VAD state on the same loaded model (for another stream)."""
        return SileroVAD(model=self.model)

    def reset(self) -> None:
        """Forget the recurrent state and the context: the next window starts a new stream."""
        self._state = np.zeros((2, 1, STATE_SIZE), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)

    def __call__(self, chunk: Any) -> float:
        """Probability (0..1) that ``chunk`` -- exactly 512 samples at 16 kHz, float or int16 -- holds speech."""
        x = to_float32(np.asarray(chunk))
        if x.shape != (WINDOW,):
            raise InputError(f"Silero VAD takes windows of exactly {WINDOW} samples at {SAMPLE_RATE} Hz, got shape "
                             f"{x.shape}; use VADSegmenter for chunks of any size")
        audio = np.concatenate([self._context, x])[None, :]
        prob, self._state = self.model.infer(audio, self._state)
        self._context = audio[0, -CONTEXT:].copy()
        return float(prob[0])


# ---------------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class SpeechStart:
    """Speech began at ``t`` seconds (stream time, padding included); reported once it has lasted min_speech_ms."""

    t: float


@dataclass(frozen=True, eq=False)
class SpeechEnd:
    """Speech that began at ``start`` ended at ``t`` seconds; ``audio`` holds its samples (16 kHz float32)."""

    t: float
    audio: np.ndarray = field(repr=False)
    start: float = 0.0


VADEvent = Union[SpeechStart, SpeechEnd]


class _Clock:
    """Maps stream sample indices to seconds from the ``t0`` given with each push (anchors pruned as time goes)."""

    def __init__(self) -> None:
        self._index: list[int] = []
        self._t0: list[float] = []

    def anchor(self, index: int, t0: float) -> None:
        if self._index and self._index[-1] == index:
            self._t0[-1] = t0
        else:
            self._index.append(index)
            self._t0.append(t0)

    def time(self, index: int) -> float:
        k = max(bisect.bisect_right(self._index, index) - 1, 0)
        return self._t0[k] + (index - self._index[k]) / SAMPLE_RATE

    def forget_before(self, index: int) -> None:
        """Drop anchors no longer needed to time samples at or after ``index``."""
        k = bisect.bisect_right(self._index, index) - 1
        if k > 0:
            del self._index[:k], self._t0[:k]


class VADSegmenter:
    """Streaming speech segmentation: ``push(samples, t0)`` chunks of any size -> :class:`SpeechStart` /
    :class:`SpeechEnd` events; :meth:`flush` at the end of the stream; :meth:`reset` before another one.

    A window whose probability reaches ``threshold`` starts speech; speech ends once the probability has stayed
    below ``neg_threshold`` (default ``threshold - 0.15``) for ``min_silence_ms``.  Segments shorter than
    ``min_speech_ms`` are dropped without any event (so :class:`SpeechStart` comes only once speech has lasted that
    long, carrying the time speech began).  Both ends are widened by ``speech_pad_ms``.  Speech longer than
    ``max_speech_s`` is cut there and goes on as a new segment, so memory stays bounded.

    ``samples`` are mono 16 kHz (float in [-1, 1] or int16); ``t0`` is the time of the first sample in seconds.
    Results do not depend on how the audio is cut into chunks.
    """

    def __init__(self, vad: SileroVAD, *, threshold: float = 0.5, neg_threshold: float | None = None,
                 min_speech_ms: float = 250, min_silence_ms: float = 300, speech_pad_ms: float = 30,
                 max_speech_s: float = 30.0) -> None:
        if not 0.0 < threshold < 1.0:
            raise InputError(f"threshold must lie strictly between 0 and 1, got {threshold!r}")
        neg = max(threshold - 0.15, 0.01) if neg_threshold is None else neg_threshold
        if not 0.0 <= neg <= threshold:
            raise InputError(f"neg_threshold must lie between 0 and threshold ({threshold}), got {neg!r}")
        for name, value in (("min_speech_ms", min_speech_ms), ("min_silence_ms", min_silence_ms),
                            ("speech_pad_ms", speech_pad_ms)):
            if value < 0:
                raise InputError(f"{name} must not be negative, got {value!r}")
        if max_speech_s * 1000 <= max(min_speech_ms, 2 * WINDOW / SAMPLE_RATE * 1000):
            raise InputError(f"max_speech_s must exceed min_speech_ms and two windows, got {max_speech_s!r}")
        self.vad = vad
        self.threshold, self.neg_threshold = float(threshold), float(neg)
        self.min_speech = int(round(min_speech_ms * SAMPLE_RATE / 1000))
        self.min_silence = int(round(min_silence_ms * SAMPLE_RATE / 1000))
        self.pad = int(round(speech_pad_ms * SAMPLE_RATE / 1000))
        self.max_speech = int(round(max_speech_s * SAMPLE_RATE))
        self.reset()

    def reset(self) -> None:
        """Start a new stream: VAD state, buffers, clock and any open segment are forgotten."""
        self.vad.reset()
        self._pending = np.zeros(0, dtype=np.float32)  # samples not yet a full window
        self._n = 0  # samples run through the VAD so far (window-aligned)
        self._received = 0  # samples pushed so far
        self._clock = _Clock()
        self._kept: list[np.ndarray] = []  # recent audio: from self._kept_from to self._n
        self._kept_from = 0
        self._start: int | None = None  # first speech sample of the open segment
        self._confirmed = False  # SpeechStart emitted for the open segment
        self._silence_from: int | None = None  # first sample of the trailing silence, if any
        self._last_end = 0  # padded end of the previous segment (segments never overlap)

    def push(self, samples: Any, t0: float) -> list[VADEvent]:
        """Feed the next ``samples`` (any length), the first of which was captured at ``t0`` seconds."""
        x = np.asarray(samples)
        if x.ndim != 1:
            raise InputError(f"VADSegmenter.push takes mono samples of shape (n,), got shape {x.shape}")
        x = to_float32(x)
        if x.size == 0:
            return []
        self._clock.anchor(self._received, float(t0))
        self._received += x.size
        buffered = np.concatenate([self._pending, x]) if self._pending.size else x
        events: list[VADEvent] = []
        whole = buffered.size - buffered.size % WINDOW
        for i in range(0, whole, WINDOW):
            events += self._window(buffered[i:i + WINDOW])
        self._pending = buffered[whole:].copy()
        return events

    def flush(self) -> list[VADEvent]:
        """End of stream: run the last partial window (zero-padded), close any open segment, then :meth:`reset`."""
        events: list[VADEvent] = []
        tail = self._pending.size
        if tail:
            window = np.zeros(WINDOW, dtype=np.float32)
            window[:tail] = self._pending
            events += self._window(window, valid=tail)
        if self._start is not None:
            end = self._silence_from if self._silence_from is not None else self._n
            events += self._close(end)
        self.reset()
        return events

    # ---------------------------------------------------------------------------------------------- internals
    def _window(self, window: np.ndarray, valid: int = WINDOW) -> list[VADEvent]:
        """Run one 512-sample window (``valid`` of them real audio) and update the segment state."""
        prob = self.vad(window)
        begin = self._n
        self._n += valid
        self._kept.append(window[:valid])
        events: list[VADEvent] = []
        if self._start is None:
            if prob >= self.threshold:
                self._start, self._silence_from, self._confirmed = begin, None, False
        else:
            if prob >= self.threshold:
                self._silence_from = None
            elif prob < self.neg_threshold and self._silence_from is None:
                self._silence_from = begin
            if self._silence_from is not None and self._n - self._silence_from >= self.min_silence:
                events += self._close(self._silence_from)
            elif self._n - self._start >= self.max_speech:
                events += self._close(self._n)
                self._start = self._n  # speech goes on: a new segment from here
        if self._start is not None and not self._confirmed:
            spoken = (self._silence_from if self._silence_from is not None else self._n) - self._start
            if spoken >= self.min_speech:
                self._confirmed = True
                events.append(SpeechStart(self._clock.time(self._padded_start(self._start))))
        self._trim()
        return events

    def _padded_start(self, start: int) -> int:
        return max(start - self.pad, self._last_end, self._kept_from, 0)

    def _close(self, end: int) -> list[VADEvent]:
        """Close the open segment at sample ``end`` (unpadded): SpeechEnd (and a late SpeechStart) if long enough."""
        start, self._start, self._silence_from = self._start, None, None
        events: list[VADEvent] = []
        if end - start >= self.min_speech:
            first = self._padded_start(start)
            last = min(end + self.pad, self._n)
            t_start = self._clock.time(first)
            if not self._confirmed:
                events.append(SpeechStart(t_start))
            events.append(SpeechEnd(self._clock.time(last), self._audio(first, last), t_start))
            self._last_end = last
        self._confirmed = False
        return events

    def _audio(self, first: int, last: int) -> np.ndarray:
        kept = np.concatenate(self._kept) if len(self._kept) > 1 else self._kept[0]
        self._kept = [kept]
        return kept[first - self._kept_from:last - self._kept_from].copy()

    def _trim(self) -> None:
        """Keep only the audio an open or future segment may still need (bounded memory)."""
        need = self._n - self.pad - WINDOW if self._start is None else self._start - self.pad
        need = max(need, self._last_end if self._start is None else 0, 0)
        while len(self._kept) > 1 and self._kept_from + self._kept[0].size <= need:
            self._kept_from += self._kept.pop(0).size
        self._clock.forget_before(min(need, self._kept_from))
