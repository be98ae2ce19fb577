"""English speech recognition with CMU PocketSphinx 5 and the US English models inside its wheel: the small,
offline fallback backend (``"pocketsphinx"``; ``pip install pocketsphinx``)."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge._lazy import lazy_import
from edge.asr.base import SAMPLE_RATE, SpeechRecognizer, Transcript, Word, as_samples
from edge.errors import InputError

log = logging.getLogger("edge")

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
        return Transcript(text, words, time.perf_counter() - started, x.size / SAMPLE_RATE, "en")

    def _words(self, segments: Any) -> Any:
        for segment in segments:
            word = _ALTERNATE.sub("", segment.word)
            if not _FILLERS.match(word):
                yield Word(word, segment.start_frame / self._frame_rate, (segment.end_frame + 1) / self._frame_rate)

    def __repr__(self) -> str:
        return f"PocketSphinxASR(hmm={self._decoder.config['hmm']!r})"
