"""Speech recognition behind one interface: :class:`SpeechRecognizer`, a registry and :func:`open_asr` (run path).

Backends (``ASR_BACKENDS``, name -> factory taking keyword options):

- ``"pocketsphinx"``: :class:`PocketSphinxASR`, CMU PocketSphinx 5 with the US English acoustic model, language
  model and dictionary that ship inside its wheel (``pip install pocketsphinx``); offline, English only, modest
  accuracy.  The default.
- ``"whisper"``: ``edge.stream.whisper.WhisperASR(model_dir, ...)``, an exported Whisper (multilingual) run by
  ONNX Runtime; imported only when asked for.

Every backend takes mono 16 kHz samples (float in [-1, 1] or int16) and returns a :class:`Transcript`.
:func:`wer` scores a hypothesis against a reference transcript.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge._lazy import lazy_import
from edge.errors import BackendUnavailable, InputError
from edge.features.audio_pre import to_float32

log = logging.getLogger("edge")

#: The rate every recognizer takes, in Hz.
SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Word:
    """One recognised word and its time span in seconds from the start of the transcribed audio."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Transcript:
    """What one ``transcribe`` call produced: ``text``; ``words`` with times where the backend gives them (else
    empty); ``seconds``: the compute time it took; ``duration``: the seconds of audio transcribed."""

    text: str
    words: tuple[Word, ...] = ()
    seconds: float = 0.0
    duration: float = 0.0


def as_samples(samples: Any) -> np.ndarray:
    """Mono 16 kHz samples (float or int16, shape (n,)) -> float32; :class:`InputError` for any other shape."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise InputError(f"speech recognition takes mono samples of shape (n,) at {SAMPLE_RATE} Hz, "
                         f"got shape {x.shape}")
    return to_float32(x)


class SpeechRecognizer(ABC):
    """The interface every ASR backend implements.

    ``transcribe(samples16k)`` recognises one finished utterance; ``partial(samples16k)`` gives the text of an
    utterance still going on (by default: transcribe what there is so far).  A recognizer holds a loaded model and
    no per-stream state between calls, so one instance may serve several streams (one call at a time).
    """

    #: Registry name of the backend.
    name: str = ""

    @abstractmethod
    def transcribe(self, samples16k: Any) -> Transcript:
        """Text of one utterance: mono 16 kHz samples, float in [-1, 1] or int16."""

    def partial(self, samples16k: Any) -> str:
        """Text of the utterance so far (for live display); backends may do this more cheaply."""
        return self.transcribe(samples16k).text

    def close(self) -> None:
        """Release the model (a no-op unless the backend holds something to free)."""

    def __enter__(self) -> SpeechRecognizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------ pocketsphinx

#: Tokens PocketSphinx puts in its segmentation that are not words.
_FILLERS = re.compile(r"^(<s>|</s>|<sil>|\[.*\]|\(NULL\)|\+\+.*\+\+)$", re.IGNORECASE)
#: Alternate pronunciations come out as ``word(2)``.
_ALTERNATE = re.compile(r"\(\d+\)$")


class PocketSphinxASR(SpeechRecognizer):
    """English speech recognition with CMU PocketSphinx 5 and the models inside its wheel.

    ``hmm`` (acoustic model folder), ``lm`` (n-gram language model) and ``dictionary`` (pronunciations) default
    to the bundled US English ones; further keyword options go to ``pocketsphinx.Decoder`` as configuration
    (e.g. ``beam=1e-60``).  The decoder is not re-entrant: calls are serialised with a lock.
    """

    name = "pocketsphinx"

    def __init__(self, *, hmm: str | Path | None = None, lm: str | Path | None = None,
                 dictionary: str | Path | None = None, loglevel: str = "FATAL", **config: Any) -> None:
        pocketsphinx = lazy_import("pocketsphinx", purpose="the pocketsphinx speech recognition backend")
        options: dict[str, Any] = {"loglevel": loglevel, **config}
        for key, value, what in (("hmm", hmm, "acoustic model folder"), ("lm", lm, "language model file"),
                                 ("dict", dictionary, "pronunciation dictionary")):
            if value is None:
                continue
            path = Path(value).expanduser()
            if not (path.is_dir() if key == "hmm" else path.is_file()):
                raise InputError(f"pocketsphinx {what} not found: {str(path)!r}; leave it out to use the US English "
                                 "model bundled with the pocketsphinx package")
            options[key] = str(path)
        started = time.perf_counter()
        try:
            self._decoder = pocketsphinx.Decoder(**options)
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"pocketsphinx could not start with {options} ({exc}); check the model paths and "
                             "options (https://pocketsphinx.readthedocs.io/en/latest/config_params.html)") from None
        self._frame_rate = int(self._decoder.config["frate"])
        rate = int(float(self._decoder.config["samprate"]))
        if rate != SAMPLE_RATE:
            raise InputError(f"pocketsphinx is configured for {rate} Hz audio, this backend feeds {SAMPLE_RATE} Hz; "
                             "leave the samprate option out")
        self._lock = threading.Lock()
        log.debug("pocketsphinx decoder ready in %.2f s", time.perf_counter() - started)

    def transcribe(self, samples16k: Any) -> Transcript:
        x = as_samples(samples16k)
        pcm = (np.clip(x, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes()
        started = time.perf_counter()
        with self._lock:
            decoder = self._decoder
            decoder.start_utt()
            if pcm:
                decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
            words = tuple(self._words(decoder.seg())) if hyp is not None else ()
        text = " ".join(w.text for w in words) if words else (hyp.hypstr.strip() if hyp is not None else "")
        return Transcript(text, words, time.perf_counter() - started, x.size / SAMPLE_RATE)

    def _words(self, segments: Any) -> Any:
        for segment in segments:
            word = _ALTERNATE.sub("", segment.word)
            if not _FILLERS.match(word):
                yield Word(word, segment.start_frame / self._frame_rate, (segment.end_frame + 1) / self._frame_rate)

    def __repr__(self) -> str:
        return f"PocketSphinxASR(hmm={self._decoder.config['hmm']!r})"


# ---------------------------------------------------------------------------------------------------- registry


def _open_whisper(**options: Any) -> SpeechRecognizer:
    """The Whisper backend: ``edge.stream.whisper.WhisperASR(model_dir, ...)``, imported only when asked for."""
    try:
        from edge.stream.whisper import WhisperASR
    except ModuleNotFoundError as exc:
        if exc.name != "edge.stream.whisper":
            raise
        raise BackendUnavailable("the whisper ASR backend is not part of this installation "
                                 "(edge.stream.whisper is missing); use asr='pocketsphinx'") from None
    return WhisperASR(**options)


#: name -> factory(**options) -> SpeechRecognizer.  "whisper" needs ``model_dir`` (an exported Whisper folder)
#: and takes WhisperASR's options (language, task, threads, device, ...).
ASR_BACKENDS: dict[str, Callable[..., SpeechRecognizer]] = {
    "pocketsphinx": PocketSphinxASR,
    "whisper": _open_whisper,
}


def open_asr(name: str, **options: Any) -> SpeechRecognizer:
    """Open the ASR backend ``name`` of :data:`ASR_BACKENDS` with its keyword ``options``."""
    factory = ASR_BACKENDS.get(name)
    if factory is None:
        raise InputError(f"unknown speech recognition backend {name!r}; available: {', '.join(ASR_BACKENDS)}")
    return factory(**options)


# ------------------------------------------------------------------------------------------------ word error rate

_PUNCTUATION = re.compile(r"[^\w\s']")


def normalize_text(text: str) -> list[str]:
    """Words of ``text`` for scoring: lower case, punctuation other than apostrophes removed."""
    return _PUNCTUATION.sub(" ", text.lower()).split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level Levenshtein distance (substitutions + deletions + insertions) / reference words.

    Both texts are normalised with :func:`normalize_text`; the result may exceed 1 when the hypothesis has many
    inserted words.  An empty reference raises :class:`InputError` (the rate is undefined).
    """
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        raise InputError("wer needs a reference with at least one word")
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1] / len(ref)
