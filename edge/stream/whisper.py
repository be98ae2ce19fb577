"""Whisper speech recognition on ONNX Runtime (or a TensorRT encoder) with numpy only: no torch, no transformers.

Reads what :func:`edge.build.whisper_export.export_whisper` wrote: ``encoder.onnx`` (or ``encoder.plan``),
``decoder_init.onnx``, ``decoder_with_past.onnx``, ``tokenizer.json``, ``mel_filters.npy`` and ``whisper.json``.

- :func:`log_mel_spectrogram` is Whisper's front end in numpy, the same as transformers' ``WhisperFeatureExtractor``:
  16 kHz samples padded / trimmed to 30 s, a centred (reflect-padded) 400-point STFT with a periodic Hann window every
  160 samples, the power spectrum through the saved mel filters, ``log10`` of at least 1e-10, the last frame dropped,
  values clamped to (max - 8), then ``(x + 4) / 4``: (n_mels, 3000) float32.
- :class:`WhisperASR` decodes greedily with the key/value cache, like ``model.generate(do_sample=False, num_beams=1)``:
  forced prefix ``<|startoftranscript|> <|lang|> <|task|> <|notimestamps|>`` (the language detected from the first
  step when ``language=None``), ``suppress_tokens`` at every step, ``begin_suppress_tokens`` at the first generated
  one, stop at ``<|endoftext|>`` or at ``max_new_tokens`` / the decoder's length limit.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge._lazy import lazy_import
from edge.errors import CheckpointError, InputError
from edge.runtime.factory import open_runner
from edge.asr.base import SpeechRecognizer, Transcript, as_samples

log = logging.getLogger("edge")

#: Whisper's audio front end: 16 kHz; 400-sample (25 ms) windows every 160 samples (10 ms); 30 s windows of 3000 frames.
SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE
N_FRAMES = N_SAMPLES // HOP_LENGTH
#: Floor of the mel power before log10, and the dynamic range kept below the loudest value (log10 units = 80 dB).
MEL_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0

FORMAT = "lfmim-edge-whisper/1"
ENCODER_FILE = "encoder.onnx"
ENCODER_ENGINE_FILE = "encoder.plan"
DECODER_INIT_FILE = "decoder_init.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past.onnx"
TOKENIZER_FILE = "tokenizer.json"
MEL_FILTERS_FILE = "mel_filters.npy"
META_FILE = "whisper.json"
TASKS = ("transcribe", "translate")
DEFAULT_MAX_NEW_TOKENS = 128


# ------------------------------------------------------------------------------------------------- the front end


def hann_window(length: int = N_FFT) -> np.ndarray:
    """The periodic Hann window (``torch.hann_window`` / transformers' ``window_function(n, "hann")``), float64."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def pad_or_trim(samples: np.ndarray, length: int = N_SAMPLES) -> np.ndarray:
    """``samples`` cut to, or padded with zeros (silence) at the end to, ``length`` samples."""
    if samples.shape[-1] >= length:
        return samples[..., :length]
    return np.pad(samples, (0, length - samples.shape[-1]))


def log_mel_spectrogram(samples: Any, mel_filters: np.ndarray) -> np.ndarray:
    """Whisper's log-mel features of 16 kHz mono ``samples``: (n_mels, 3000) float32 (see the module notes).

    ``samples``: shape (n,), float in [-1, 1] or int16 (scaled by 1 / 32768).  ``mel_filters``: (n_fft // 2 + 1,
    n_mels), as saved by the export (the feature extractor's ``mel_filters``).
    """
    x = pad_or_trim(as_samples(samples)).astype(np.float64)
    if mel_filters.ndim != 2 or mel_filters.shape[0] != N_FFT // 2 + 1:
        raise InputError(f"mel filters must be ({N_FFT // 2 + 1}, n_mels), got {mel_filters.shape}")
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]  # (3001, 400)
    power = np.abs(np.fft.rfft(frames * hann_window(), axis=-1)) ** 2  # (3001, 201)
    mel = np.maximum(power @ mel_filters.astype(np.float64), MEL_FLOOR).T  # (n_mels, 3001)
    log_spec = np.log10(mel)[:, :-1]
    log_spec = np.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class WhisperTranscript(Transcript):
    """:class:`edge.asr.base.Transcript` (whose ``language`` is the one decoded as: detected when the recogniser's
    ``language`` is ``None``; ``None`` for English-only models) plus the generated token ids (no prompt, no
    ``<|endoftext|>``)."""

    tokens: tuple[int, ...] = ()


# ------------------------------------------------------------------------------------------------- the model


def read_meta(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``whisper.json`` of an exported model directory, checked: every file it lists must be there."""
    root = Path(model_dir).expanduser()
    meta_path = root / META_FILE
    if not root.is_dir():
        raise InputError(f"Whisper model directory not found: {root}; export one first with "
                         "edge.build.whisper_export.export_whisper(CHECKPOINT, DIR)")
    if not meta_path.is_file():
        raise CheckpointError(f"{root} has no {META_FILE}: it is not an exported Whisper model; "
                              "export one with edge.build.whisper_export.export_whisper(CHECKPOINT, DIR)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{meta_path} is unreadable ({exc}); export the model again") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} has format {meta.get('format')!r}, this version reads {FORMAT!r}; "
                              "export the model again with this version")
    missing = [name for name in meta.get("files", {}) if not (root / name).is_file()]
    if missing:
        raise CheckpointError(f"{root} lacks {missing} listed in {META_FILE}; export the model again")
    return meta


class WhisperASR(SpeechRecognizer):
    """Greedy Whisper speech recognition: ``transcribe(samples16k) -> WhisperTranscript`` (the ``"whisper-onnx"``
    backend of :func:`edge.asr.open_asr`).

    ``language``: a code the model knows (``"zh"``, ``"en"``, ...) or ``None`` to detect it per call; ``task``:
    ``"transcribe"`` or ``"translate"``; ``max_new_tokens`` per 30 s window; ``threads``: ONNX Runtime intra-op
    threads; ``device``: ``"cpu"`` or ``"cuda"``; ``encoder``: another encoder artifact (e.g. a TensorRT
    ``encoder.plan`` built with :func:`edge.build.whisper_export.whisper_encoder_profiles`); ``use_cache=False``
    re-runs the whole decoder at every step (slower; for checking the cache path).  A loaded model is stateless: one
    instance may serve several streams, one call at a time.
    """

    name = "whisper-onnx"

    def __init__(self, model_dir: str | os.PathLike[str], *, language: str | None = "zh", task: str = "transcribe",
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, threads: int | None = None, device: str | None = None,
                 encoder: str | os.PathLike[str] | None = None, use_cache: bool = True) -> None:
        self.model_dir = Path(model_dir).expanduser()
        self.meta = read_meta(self.model_dir)
        self.tokens = self.meta["tokens"]
        self.language = self._check_language(language)
        tasks = list(self.tokens["tasks"]) if self.tokens["languages"] else ["transcribe"]  # English-only models
        if task not in TASKS or task not in tasks:
            raise InputError(f"unknown task {task!r} for this model; choose one of {tasks}")
        self.task = task
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        self.max_new_tokens = max_new_tokens
        self.use_cache = bool(use_cache)
        self.mel_filters = np.load(self.model_dir / MEL_FILTERS_FILE)
        tokenizers = lazy_import("tokenizers", purpose="decoding Whisper tokens to text")
        self.tokenizer = tokenizers.Tokenizer.from_file(str(self.model_dir / TOKENIZER_FILE))
        vocab = int(self.meta["vocab_size"])
        self._suppress = np.array([t for t in self.tokens["suppress_tokens"] if 0 <= t < vocab], dtype=np.int64)
        self._begin_suppress = np.array([t for t in self.tokens["begin_suppress_tokens"] if 0 <= t < vocab],
                                        dtype=np.int64)
        self._languages = np.array(sorted(self.tokens["languages"].values()), dtype=np.int64)
        self._layers = int(self.meta["decoder_layers"])
        opened = []
        try:
            for path in (Path(encoder) if encoder else self.model_dir / ENCODER_FILE,
                         self.model_dir / DECODER_INIT_FILE, self.model_dir / DECODER_WITH_PAST_FILE):
                opened.append(open_runner(path, device=device if path.suffix == ".onnx" else None, threads=threads))
        except BaseException:
            for runner in opened:
                runner.close()
            raise
        self.encoder, self.decoder_init, self.decoder_with_past = opened

    # configuration --------------------------------------------------------------------------------------------------
    def _check_language(self, language: str | None) -> str | None:
        known = self.tokens["languages"]
        if language is None or not known:
            if language is not None:
                raise InputError(f"this Whisper model is English-only; pass language=None, not {language!r}")
            return None
        code = language.strip().lower().strip("<|>")
        if code not in known:
            raise InputError(f"language {language!r} is not one this model knows; choose one of {sorted(known)}")
        return code

    # life cycle -----------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the three runners."""
        for runner in (self.encoder, self.decoder_init, self.decoder_with_past):
            runner.close()

    # decoding -------------------------------------------------------------------------------------------------------
    def encode(self, mel: np.ndarray) -> np.ndarray:
        """(n_mels, 3000) log-mel features -> encoder hidden states (1, 1500, d_model)."""
        return self.encoder.infer({"input_features": mel[None].astype(np.float32)})["encoder_hidden_states"]

    def detect_language(self, hidden: np.ndarray) -> str:
        """The most likely language token after ``<|startoftranscript|>`` (transformers' ``detect_language``)."""
        if self._languages.size == 0:
            raise InputError("this Whisper model is English-only; it has no language tokens to detect")
        ids = np.array([[self.tokens["startoftranscript"]]], dtype=np.int64)
        logits = self.decoder_init.infer({"input_ids": ids, "encoder_hidden_states": hidden})["logits"][0, -1]
        best = int(self._languages[np.argmax(logits[self._languages])])
        return next(code for code, tid in self.tokens["languages"].items() if tid == best)

    def prefix(self, language: str | None) -> list[int]:
        """The forced decoder prompt for ``language`` (``None``: English-only model)."""
        ids = [self.tokens["startoftranscript"]]
        if language is not None:
            ids += [self.tokens["languages"][language], self.tokens["tasks"][self.task]]
        if self.tokens["notimestamps"] is not None:
            ids.append(self.tokens["notimestamps"])
        return ids

    def _next_token(self, logits: np.ndarray, step: int) -> int:
        scores = logits.astype(np.float32, copy=True)
        scores[self._suppress] = -np.inf
        if step == 0:
            scores[self._begin_suppress] = -np.inf
        return int(np.argmax(scores))

    def _cache(self, outputs: dict[str, np.ndarray], source: str, target: str) -> dict[str, np.ndarray]:
        """Rename a cache: ``{source}_key_{i}`` outputs -> ``{target}_key_{i}`` feeds (values likewise)."""
        return {f"{target}_{kind}_{i}": outputs[f"{source}_{kind}_{i}"]
                for i in range(self._layers) for kind in ("key", "value")}

    def decode(self, hidden: np.ndarray, prefix: Sequence[int]) -> list[int]:
        """Greedy decoding after ``prefix``: the generated ids, without the final ``<|endoftext|>``."""
        limit = min(self.max_new_tokens, int(self.meta["max_target_positions"]) - len(prefix))
        eot = self.tokens["endoftext"]
        sequence = np.array([prefix], dtype=np.int64)
        out = self.decoder_init.infer({"input_ids": sequence, "encoder_hidden_states": hidden})
        cross = self._cache(out, "cross", "cross")
        generated: list[int] = []
        while len(generated) < limit:
            token = self._next_token(out["logits"][0, -1], len(generated))
            if token == eot:
                break
            generated.append(token)
            if len(generated) == limit:
                break
            step = np.array([[token]], dtype=np.int64)
            if self.use_cache:
                out = self.decoder_with_past.infer({"input_ids": step, **self._cache(out, "present", "past"), **cross})
            else:
                sequence = np.concatenate([sequence, step], axis=1)
                out = self.decoder_init.infer({"input_ids": sequence, "encoder_hidden_states": hidden})
        return generated

    def transcribe(self, samples16k: Any) -> WhisperTranscript:
        """Recognise mono 16 kHz samples (float in [-1, 1] or int16); audio over 30 s is decoded window by window."""
        started = time.perf_counter()
        samples = as_samples(samples16k)
        tokens: list[int] = []
        language = self.language
        for offset in range(0, samples.shape[0], N_SAMPLES):
            hidden = self.encode(log_mel_spectrogram(samples[offset:offset + N_SAMPLES], self.mel_filters))
            if self.language is None and self._languages.size:
                language = self.detect_language(hidden)
            tokens += self.decode(hidden, self.prefix(language))
        text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return WhisperTranscript(text, seconds=time.perf_counter() - started, duration=samples.size / SAMPLE_RATE,
                                 tokens=tuple(tokens), language=language)

    def __repr__(self) -> str:
        return (f"<WhisperASR {self.model_dir} language={self.language or 'auto'} task={self.task} "
                f"cache={'on' if self.use_cache else 'off'}>")


__all__ = ["N_FRAMES", "N_SAMPLES", "SAMPLE_RATE", "WhisperASR", "WhisperTranscript", "hann_window",
           "log_mel_spectrogram", "pad_or_trim", "read_meta"]
