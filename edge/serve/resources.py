"""What every session shares: the loaded networks (one :class:`~edge.runtime.engines.EngineSet`), the voice
activity model and the speech recognizer, opened once at server start (the first run of a profile builds it
first, as ``edge-run`` does).  ONNX Runtime sessions may be called from several threads at once; the speech
recognizer serialises its calls (one PocketSphinx decoder holds ~90 MB, so one is shared rather than one per
session); each session keeps its own stream state (queues, rings, VAD state, smoothing) in its own
:class:`~edge.stream.recognizer.Recognizer`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from edge.stream.config import RunConfig

log = logging.getLogger("edge")


@dataclass
class SharedModels:
    engines: Any
    vad: Any
    asr: Any | None
    languages: tuple[str, ...]
    language: str
    load_seconds: float

    @property
    def profile(self) -> Any:
        return self.engines.profile

    @property
    def random_weights(self) -> bool:
        return bool(self.engines.manifest.get("random_weights"))

    def close(self) -> None:
        if self.asr is not None:
            self.asr.close()
        self.engines.close()


def _languages(config: RunConfig, asr: Any | None) -> tuple[tuple[str, ...], str]:
    if asr is None:
        return (), ""
    if getattr(asr, "name", "") == "pocketsphinx":  # chosen by name or by --asr auto
        return ("en",), "en"
    language = config.language or getattr(asr, "language", None) or ""
    return ((language,), language) if language else (("auto",), "auto")


def open_shared(config: RunConfig) -> SharedModels:
    """Build the profile if it has no build yet, then open its networks, the VAD model and the ASR once."""
    from edge.runtime.engines import open_engines
    from edge.stream.first_run import ensure_build
    from edge.stream.vad import SileroVADModel

    started = time.perf_counter()
    if not config.engines:  # the first run of a profile builds it, once, before anything listens
        ensure_build(config.profile, target=config.target, root=config.engines_root,
                     random_weights=config.random_weights, threads=config.threads or None)
    engines = open_engines(config.profile, target=config.target, root=config.engines_root,
                           directory=config.engines or None, threads=config.threads or None)
    try:
        vad = SileroVADModel(threads=1)
        from edge.asr.registry import open_for_run

        asr = open_for_run(config, engines.profile)  # --asr auto: Whisper when installed, else pocketsphinx
        if asr is not None:  # shared by every session: its calls on one thread (edge.asr.serial)
            from edge.asr.serial import OneThreadASR

            asr = OneThreadASR(asr)
    except BaseException:
        engines.close()
        raise
    languages, language = _languages(config, asr)
    seconds = time.perf_counter() - started
    log.info("shared models ready in %.1f s: %s (%s), ASR %s", seconds, engines.directory,
             engines.manifest.get("precision"), config.asr)
    return SharedModels(engines, vad, asr, languages, language, seconds)
