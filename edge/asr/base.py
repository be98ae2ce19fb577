"""The one speech-recognition interface every backend implements, and its result type (run path: numpy only).

Backends import this module, never the reverse, so no backend module imports another (see :mod:`edge.asr`).

- :class:`SpeechRecognizer`: ``transcribe(samples16k) -> Transcript`` for a finished utterance, ``partial(...)`` for
  speech still going on (cheaper where the backend can do that), ``close()``, a context manager.
- :class:`Transcript`: text, :class:`Word` timings where the backend gives them, the compute time, the seconds of
  audio, the language decoded as.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import InputError
from edge.features.audio_pre import to_float32

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
    empty); ``seconds``: the compute time it took; ``duration``: the seconds of audio transcribed; ``language``: the
    language it was decoded as (detected or fixed; None where the backend does not say)."""

    text: str
    words: tuple[Word, ...] = ()
    seconds: float = 0.0
    duration: float = 0.0
    language: str | None = None


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
    no per-stream state between calls, so one instance may serve several streams; each backend says whether calls
    from several threads run at once or one after the other.
    """

    #: Registry name of the backend.
    name: str = ""

    @abstractmethod
    def transcribe(self, samples16k: Any) -> Transcript:
        """Text of one utterance: mono 16 kHz samples, float in [-1, 1] or int16."""

    def partial(self, samples16k: Any) -> Transcript:
        """Text of the utterance so far (for live display); backends may do this more cheaply."""
        return self.transcribe(samples16k)

    def close(self) -> None:
        """Release the model (a no-op unless the backend holds something to free)."""

    def __enter__(self) -> SpeechRecognizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["SAMPLE_RATE", "SpeechRecognizer", "Transcript", "Word", "as_samples"]
