"""Whisper on CTranslate2 through faster-whisper: the ``"whisper"`` ASR backend (multilingual, offline once the model
is on disk; int8 on CPUs, float16 on CUDA GPUs where CTranslate2 has it).

faster-whisper loads the model (:class:`faster_whisper.WhisperModel`: a local folder, or its own Hub download for
size names and Hub ids) and supplies the log-mel front end, the tokenizer and the word aligner; this module runs
the decoding itself, on speech segments that the live loop's VAD already cut, so that every call is bounded:

- one encoder pass per window, reused for language detection, decoding and word alignment;
- the encoder window: ``window_s`` seconds of audio (Whisper's own is 30 s; the audio is padded with silence the
  way Whisper pads it), grown in ``WINDOW_STEP_S`` steps to fit longer speech and never above 30 s.  The default,
  10 s, costs the CPU about a fifth of the 30 s window for the same error rate on the validation half of
  ``edge-bench asr``'s English sets; 6 s makes Whisper repeat itself (docs/asr.md has the figures);
- beam search (``beam_size`` 5 for finals, greedy for partials) with no conditioning on previous text, at most ``tokens_per_s`` tokens per
  second of audio (plus ``TOKEN_SLACK``), optional repetition penalty / n-gram blocking; a decode that hits the cap
  or whose text compresses like a loop (gzip ratio > ``LOOP_COMPRESSION``) has its repeated tail cut to one copy;
- Whisper's no-speech rule (no-speech probability > ``no_speech_threshold`` and mean log-probability below
  ``logprob_threshold``: the text is dropped);
- audio over 30 s is decoded window by window until ``max_compute_ratio`` compute seconds per audio second are
  spent (the rest is left out, with a warning).

Finals carry word timings (CTranslate2's cross-attention alignment); partials (:meth:`FasterWhisperASR.partial`)
skip the alignment and decode at most ``partial_tokens_per_s`` tokens per second.

Threads: a loaded model is shared safely.  Calls keep no state in the recognizer; CTranslate2 queues concurrent
calls and runs ``workers`` of them at once (1 by default: several streams then take turns).
"""

from __future__ import annotations

import logging
import math
import os
import time
import zlib
from dataclasses import dataclass, field, fields, replace
from typing import Any, Sequence

import numpy as np

from edge._lazy import lazy_import
from edge.asr.base import SAMPLE_RATE, SpeechRecognizer, Transcript, Word, as_samples
from edge.asr.whisper_models import ModelSource, download_error, resolve_model
from edge.errors import BackendUnavailable, InputError

log = logging.getLogger("edge")

#: Whisper's window: 30 s of audio, 100 log-mel frames a second, 50 encoder positions a second.
FULL_WINDOW_S = 30.0
HOP = 160
WINDOW_STEP_S = 2.0
#: Tokens allowed beyond ``tokens_per_s`` x duration (short utterances, punctuation).
TOKEN_SLACK = 10
#: Whisper's compression-ratio threshold for repetitive output; a decode that hit the token cap or compresses more
#: is cut after two copies of a repeating tail, any other after ``LOOP_COPIES`` ("no no no" stays).
LOOP_COMPRESSION = 2.4
LOOP_COPIES = 3.5
#: Above this no-speech probability the text is dropped whatever its log-probability (Whisper writes "you" for
#: digital silence with no-speech 0.90; on 78 real utterances of the val split -- RAVDESS, ESD, CREMA-D, the
#: Mandarin sample -- the highest was 0.31).
SURE_NO_SPEECH = 0.85
MAX_TEXT_TOKENS = 224  # half of Whisper's 448-token context, as Whisper's own sample_len
#: A prompt per language for ``prompt=None``: simplified characters steer Whisper to write simplified Chinese.
DEFAULT_PROMPTS = {"zh": "以下是普通话的句子。"}

_INSTALL = "pip install 'faster-whisper>=1.2,<2' 'ctranslate2>=4.5,<5'"


@dataclass(frozen=True)
class WhisperOptions:
    """Decoding options of :class:`FasterWhisperASR` (see the module notes); defaults in one place."""

    language: str | None = None  # a code ("en", "zh"), None to detect per call; "en,zh" detects among these
    task: str = "transcribe"
    beam_size: int = 5  # finals; partials decode greedily
    window_s: float = 10.0
    tokens_per_s: float = 12.0
    partial_tokens_per_s: float = 8.0
    max_compute_ratio: float = 3.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    prompt: str | None = None  # None: DEFAULT_PROMPTS for the language; "": none
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    word_timestamps: bool = True

    def check(self) -> "WhisperOptions":
        if self.task not in ("transcribe", "translate"):
            raise InputError(f"Whisper task {self.task!r}: expected transcribe or translate")
        if not isinstance(self.beam_size, int) or self.beam_size < 1:
            raise InputError(f"Whisper beam_size must be a positive integer, got {self.beam_size!r}")
        if not 1.0 <= float(self.window_s) <= FULL_WINDOW_S:
            raise InputError(f"Whisper window_s must lie between 1 and {FULL_WINDOW_S:g} s, got {self.window_s!r}")
        for name in ("tokens_per_s", "partial_tokens_per_s", "max_compute_ratio", "repetition_penalty"):
            if not float(getattr(self, name)) > 0:
                raise InputError(f"Whisper {name} must be positive, got {getattr(self, name)!r}")
        if self.no_repeat_ngram_size < 0:
            raise InputError(f"Whisper no_repeat_ngram_size must be 0 (off) or more, got {self.no_repeat_ngram_size}")
        return self


def parse_languages(language: str | Sequence[str] | None) -> tuple[str, ...]:
    """``None`` / ``""`` -> () (detect any); ``"en"`` -> ("en",); ``"en,zh"`` -> ("en", "zh")."""
    if language is None:
        return ()
    items = language.split(",") if isinstance(language, str) else list(language)
    return tuple(dict.fromkeys(c.strip().lower().strip("<|>") for c in items if c.strip()))


def collapse_repeats(tokens: list[int], *, copies: float = 2.0, max_period: int = 64) -> list[int]:
    """``tokens`` whose tail repeats one n-gram more than ``copies`` times cut to a single copy: with the default,
    ``A B C A B C A B`` -> ``A B C`` (two copies and part of a third); two copies alone are left ("help help")."""
    n = len(tokens)
    for period in range(1, min(max_period, n // 2) + 1):
        k = 0  # tokens[n - k - period:] repeats with this period
        while k < n - period and tokens[n - 1 - k] == tokens[n - 1 - k - period]:
            k += 1
        if (k + period) / period > copies:
            return tokens[:n - k]
    return tokens


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


def default_threads() -> int:
    """CPU threads when none are asked for: the usable cores, at most 4 (CTranslate2's own default is 4, which
    oversubscribes a 2-core machine)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def pick_compute_type(device: str, requested: str, ctranslate2: Any) -> str:
    """int8 on CPUs; float16 on CUDA where CTranslate2 supports it there (int8_float32 / float32 otherwise)."""
    if requested != "auto":
        return requested
    supported = set(ctranslate2.get_supported_compute_types(device))
    for candidate in (("int8",) if device == "cpu" else ("float16", "int8_float16", "int8_float32", "int8")):
        if candidate in supported:
            return candidate
    return "float32"


@dataclass
class _Window:
    """One encoder window's decode."""

    tokens: list[int] = field(default_factory=list)
    language: str | None = None
    words: list[Word] = field(default_factory=list)
    capped: bool = False
    silent: bool = False


class FasterWhisperASR(SpeechRecognizer):
    """Whisper speech recognition with faster-whisper / CTranslate2 (the ``"whisper"`` backend of
    :func:`edge.asr.open_asr`).

    ``model``: what :func:`edge.asr.whisper_models.resolve_model` takes ("" = the packaged model); ``device``:
    "auto", "cpu" or "cuda"; ``compute_type``: "auto" (int8 on CPUs, float16 on CUDA) or a CTranslate2 type;
    ``threads``: CPU threads (0 = the usable cores, at most 4); ``workers``: calls run at once; further keyword options
    are :class:`WhisperOptions` fields.
    """

    name = "whisper"

    def __init__(self, model: str | ModelSource | None = "", *, device: str = "auto", compute_type: str = "auto",
                 threads: int = 0, workers: int = 1, **options: Any) -> None:
        known = {f.name for f in fields(WhisperOptions)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown Whisper option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        self.options = WhisperOptions(**options).check()
        self.languages = parse_languages(self.options.language)
        if device not in ("auto", "cpu", "cuda"):
            raise InputError(f"Whisper device {device!r}: expected auto, cpu or cuda")
        self.source = model if isinstance(model, ModelSource) else resolve_model(model)
        ctranslate2 = lazy_import("ctranslate2", purpose="the whisper speech recognition backend")
        fw = lazy_import("faster_whisper", purpose="the whisper speech recognition backend")
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.device = device
        self.compute_type = pick_compute_type(device, compute_type, ctranslate2)
        started = time.perf_counter()
        try:
            self.model = fw.WhisperModel(str(self.source.path or self.source.hub), device=device,
                                         compute_type=self.compute_type, cpu_threads=int(threads or default_threads()),
                                         num_workers=max(1, int(workers)))
        except Exception as exc:  # noqa: BLE001 - the Hub client raises many kinds; each becomes one line
            if self.source.hub is not None and not isinstance(exc, RuntimeError):
                raise download_error(self.source, exc) from None
            if not isinstance(exc, (OSError, ValueError, RuntimeError)):
                raise
            raise BackendUnavailable(f"faster-whisper could not load the Whisper model {self.source.label} "
                                     f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                                     "check the folder, or reinstall it") from None
        self.multilingual = bool(self.model.model.is_multilingual)
        try:
            self._check_languages()
        except InputError:
            self.close()
            raise
        self._ct2, self._owner = ctranslate2, True
        from faster_whisper.transcribe import get_suppressed_tokens
        from faster_whisper.tokenizer import Tokenizer

        self._tokenizer_cls, self._suppressed = Tokenizer, get_suppressed_tokens
        log.info("Whisper %s on %s (%s) loaded in %.1f s", self.source.label, device, self.compute_type,
                 time.perf_counter() - started)

    # -- public -------------------------------------------------------------------------------------------------
    def transcribe(self, samples16k: Any) -> Transcript:
        return self._run(samples16k, partial=False)

    def partial(self, samples16k: Any) -> Transcript:
        """The text of speech still going on: no word alignment, at most ``partial_tokens_per_s`` tokens a second."""
        return self._run(samples16k, partial=True)

    def with_options(self, **changes: Any) -> "FasterWhisperASR":
        """A view of this recognizer (same loaded model) with other :class:`WhisperOptions`."""
        other = object.__new__(FasterWhisperASR)
        other.__dict__.update(self.__dict__)
        other._owner = False  # closing a view leaves the shared model loaded
        other.options = replace(self.options, **changes).check()
        other.languages = parse_languages(other.options.language)
        other._check_languages()
        return other

    def _check_languages(self) -> None:
        supported = set(self.model.supported_languages)
        bad = [c for c in self.languages if c not in supported]
        if bad:
            raise InputError(f"language {', '.join(bad)} is not one this Whisper model knows; "
                             f"choose among {', '.join(sorted(supported))}")

    def close(self) -> None:
        model = getattr(self, "model", None)
        if getattr(self, "_owner", True) and model is not None and hasattr(model.model, "unload_model"):
            try:
                model.model.unload_model()
            except (RuntimeError, ValueError):  # already unloaded, or still in use by a view
                pass

    def __repr__(self) -> str:
        return (f"<FasterWhisperASR {self.source.label} {self.device}/{self.compute_type} "
                f"language={','.join(self.languages) or 'auto'} window={self.options.window_s:g}s>")

    # -- decoding -----------------------------------------------------------------------------------------------
    def _run(self, samples16k: Any, *, partial: bool) -> Transcript:
        started = time.perf_counter()
        x = as_samples(samples16k)
        duration = x.size / SAMPLE_RATE
        full = int(FULL_WINDOW_S * SAMPLE_RATE)
        tokens: list[int] = []
        words: list[Word] = []
        language = self.languages[0] if len(self.languages) == 1 else None
        for offset in range(0, x.size, full):
            if offset and time.perf_counter() - started > self.options.max_compute_ratio * duration:
                log.warning("Whisper stopped after %.1f s of %.1f s of audio: the time cap (%.1f compute s per audio "
                            "s) was reached", offset / SAMPLE_RATE, duration, self.options.max_compute_ratio)
                break
            window = self._window(x[offset:offset + full], partial=partial)
            if window.silent:
                continue
            tokens += window.tokens
            language = window.language
            words += [Word(w.text, w.start + offset / SAMPLE_RATE, w.end + offset / SAMPLE_RATE) for w in window.words]
        text = self._tokenizer(language or "en").decode(tokens).strip() if tokens else ""
        return Transcript(text, tuple(words), time.perf_counter() - started, duration, language)

    def _tokenizer(self, language: str) -> Any:
        return self._tokenizer_cls(self.model.hf_tokenizer, self.multilingual, task=self.options.task,
                                   language=language if self.multilingual else None)

    def window_samples(self, n: int) -> int:
        """Samples the encoder sees for ``n`` samples of speech: ``window_s``, grown in steps to fit, at most 30 s."""
        need = max(float(self.options.window_s), n / SAMPLE_RATE)
        steps = math.ceil(round((need - self.options.window_s) / WINDOW_STEP_S, 6)) if need > self.options.window_s else 0
        return int(round(min(FULL_WINDOW_S, self.options.window_s + steps * WINDOW_STEP_S) * SAMPLE_RATE))

    def _features(self, chunk: np.ndarray) -> np.ndarray:
        size = self.window_samples(chunk.size)
        padded = np.zeros(size, np.float32)
        padded[:chunk.size] = chunk[:size]
        mel = self.model.feature_extractor(padded, padding=0)
        return np.ascontiguousarray(mel[:, :size // HOP], dtype=np.float32)

    def _detect(self, encoded: Any) -> str:
        ranked = self.model.model.detect_language(encoded)[0]
        for token, _ in ranked:
            code = token[2:-2]
            if not self.languages or code in self.languages:
                return code
        return self.languages[0]

    def _window(self, chunk: np.ndarray, *, partial: bool) -> _Window:
        o = self.options
        if chunk.size == 0:
            return _Window(silent=True)
        encoded = self.model.model.encode(self._ct2.StorageView.from_array(self._features(chunk)[None]),
                                          to_cpu=False)
        if not self.multilingual:
            language = None
        elif len(self.languages) == 1:
            language = self.languages[0]
        else:
            language = self._detect(encoded)
        tokenizer = self._tokenizer(language or "en")
        prompt_text = DEFAULT_PROMPTS.get(language or "", "") if o.prompt is None else o.prompt
        previous = tokenizer.encode(" " + prompt_text.strip()) if prompt_text.strip() else []
        prompt = self.model.get_prompt(tokenizer, previous, without_timestamps=True)
        seconds = chunk.size / SAMPLE_RATE
        rate = o.partial_tokens_per_s if partial else o.tokens_per_s
        cap = min(MAX_TEXT_TOKENS, int(math.ceil(rate * seconds)) + TOKEN_SLACK)
        result = self.model.model.generate(
            encoded, [prompt], beam_size=1 if partial else o.beam_size, patience=1.0, length_penalty=1.0,
            repetition_penalty=o.repetition_penalty, no_repeat_ngram_size=o.no_repeat_ngram_size,
            max_length=len(prompt) + cap, return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=list(self._suppressed(tokenizer, [-1]) or []))[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        capped = len(tokens) >= cap
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1) if result.scores else 0.0
        if result.no_speech_prob > o.no_speech_threshold and (avg_logprob < o.logprob_threshold or
                                                              result.no_speech_prob > SURE_NO_SPEECH):
            return _Window(language=language, silent=True)
        looping = capped or compression_ratio(tokenizer.decode(tokens)) > LOOP_COMPRESSION
        kept = collapse_repeats(tokens, copies=2.0 if looping else LOOP_COPIES)
        if len(kept) < len(tokens):
            log.debug("Whisper output looped: %d tokens cut to %d", len(tokens), len(kept))
        tokens = kept
        words: list[Word] = []
        if o.word_timestamps and not partial and tokens:
            frames = min(chunk.size, encoded.shape[1] * 2 * HOP) // HOP
            for w in self.model.find_alignment(tokenizer, [tokens], encoded, frames)[0]:
                text = w["word"].strip()
                if text and any(ch.isalnum() for ch in text):
                    start = min(float(w["start"]), seconds)
                    words.append(Word(text, start, max(start, min(float(w["end"]), seconds))))
            words = _trim_first_word(words)
        return _Window(tokens, language, words, capped)


def _trim_first_word(words: list[Word]) -> list[Word]:
    """The alignment lets the first word absorb the silence before it (it often starts at 0): cap its length at
    twice the median word length (at most 1.4 s), moving its start."""
    if len(words) < 2:
        return words
    longest = 2.0 * min(0.7, float(np.median([w.end - w.start for w in words])))
    first = words[0]
    if first.end - first.start > longest:
        words[0] = Word(first.text, first.end - longest, first.end)
    return words


__all__ = ["DEFAULT_PROMPTS", "FULL_WINDOW_S", "FasterWhisperASR", "WhisperOptions", "collapse_repeats",
           "compression_ratio", "parse_languages", "pick_compute_type"]
