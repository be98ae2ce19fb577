"""Speech recognition (run path): one interface, three backends, model sources, and scoring.

- :mod:`edge.asr.base`: :class:`SpeechRecognizer`, :class:`Transcript`, :class:`Word` (every backend imports it;
  it imports no backend).
- :mod:`edge.asr.whisper_ct2`: Whisper on faster-whisper / CTranslate2 (``"whisper"``, the default when a model is
  installed); :mod:`edge.asr.whisper_models`: where its model comes from (folder, registry packages, the Hub).
- :mod:`edge.stream.whisper`: an ONNX export of Whisper on ONNX Runtime / TensorRT (``"whisper-onnx"``).
- :mod:`edge.asr.sphinx`: PocketSphinx, English (``"pocketsphinx"``, the small fallback).
- :mod:`edge.asr.registry`: :func:`open_asr`, ``auto``, and :func:`plan_asr` (checks before anything loads).
- :mod:`edge.asr.scoring`: text normalisation, WER and CER.
"""

from edge.asr.base import SAMPLE_RATE, SpeechRecognizer, Transcript, Word, as_samples
from edge.asr.registry import (ASR_BACKENDS, BACKEND_NAMES, ASRPlan, open_asr, open_for_run, open_planned, plan_asr,
                               plan_for_run)

__all__ = ["ASRPlan", "ASR_BACKENDS", "BACKEND_NAMES", "SAMPLE_RATE", "SpeechRecognizer", "Transcript", "Word",
           "as_samples", "open_asr", "open_for_run", "open_planned", "plan_asr", "plan_for_run"]
