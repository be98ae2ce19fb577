"""Former home of the speech-recognition interface; it now lives in :mod:`edge.asr` (kept so old imports work).

``from edge.stream.asr import open_asr, SpeechRecognizer, Transcript, PocketSphinxASR, wer`` still works; new code
imports from :mod:`edge.asr` and its modules.
"""

from edge.asr.base import SAMPLE_RATE, SpeechRecognizer, Transcript, Word, as_samples
from edge.asr.registry import ASR_BACKENDS, open_asr
from edge.asr.scoring import normalize_english as normalize_text
from edge.asr.scoring import wer
from edge.asr.sphinx import PocketSphinxASR

__all__ = ["ASR_BACKENDS", "PocketSphinxASR", "SAMPLE_RATE", "SpeechRecognizer", "Transcript", "Word", "as_samples",
           "normalize_text", "open_asr", "wer"]
