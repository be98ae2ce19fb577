"""The audio feature extractor: a wav2vec2 encoder loaded through transformers (build path; torch).

The paper uses a Chinese wav2vec2-base (e.g. hub id ``TencentGameMate/chinese-wav2vec2-base``): 16 kHz audio, a
convolutional front-end with a 25 ms receptive field and a 20 ms hop, and 768-d last hidden states, one per frame.
:func:`load_audio_encoder` loads it from a local directory or a hub id together with its ``do_normalize`` setting;
:class:`AudioEncoder` is the module that gets exported to ONNX.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.features.audio_pre import SAMPLE_RATE
from edge.features.text import load_pretrained

torch = lazy_import("torch", purpose="the wav2vec2 audio feature extractor")
nn = torch.nn

log = logging.getLogger("edge")

#: The paper's audio encoder (a Chinese wav2vec2-base).
PAPER_AUDIO_MODEL = "TencentGameMate/chinese-wav2vec2-base"


@dataclass(frozen=True)
class AudioEncoderBundle:
    """A loaded audio encoder: the Wav2Vec2Model (eval mode), whether its input is normalised, where it came from."""

    model: Any  # transformers Wav2Vec2Model
    do_normalize: bool
    sampling_rate: int
    source: str

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def _feature_extractor_settings(transformers: Any, name_or_path: str | Path, config: Any) -> tuple[bool, int]:
    """(do_normalize, sampling_rate) from the model's feature extractor config, or the wav2vec2 convention."""
    try:
        fe = load_pretrained("audio feature extractor", name_or_path,
                             transformers.AutoFeatureExtractor.from_pretrained)
        return bool(getattr(fe, "do_normalize", False)), int(getattr(fe, "sampling_rate", SAMPLE_RATE))
    except InputError as exc:  # a missing preprocessor_config.json is common and not fatal
        # wav2vec2 checkpoints with layer-normalised conv features (large / "stable layer norm") expect normalised
        # input; base models with group norm were trained on raw waveforms.
        guess = getattr(config, "feat_extract_norm", "group") == "layer"
        log.warning("no feature extractor config for %s (%s); assuming do_normalize=%s", name_or_path,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__, guess)
        return guess, SAMPLE_RATE


def load_audio_encoder(name_or_path: str | Path = PAPER_AUDIO_MODEL) -> AudioEncoderBundle:
    """Load a Wav2Vec2Model from a local directory or a hub id (eager attention, for export)."""
    transformers = lazy_import("transformers", purpose="loading the wav2vec2 audio encoder")
    model = load_pretrained("audio encoder", name_or_path, transformers.Wav2Vec2Model.from_pretrained,
                            attn_implementation="eager")
    do_normalize, rate = _feature_extractor_settings(transformers, name_or_path, model.config)
    if rate != SAMPLE_RATE:
        log.warning("audio encoder %s expects %d Hz input; the pipeline resamples to %d Hz", name_or_path, rate,
                    SAMPLE_RATE)
    log.info("audio encoder loaded from %s (hidden size %d, do_normalize=%s)", name_or_path,
             model.config.hidden_size, do_normalize)
    return AudioEncoderBundle(model.eval(), do_normalize, rate, str(name_or_path))


class AudioEncoder(nn.Module):
    """Export wrapper: waveform float32 (B, samples) at 16 kHz -> last hidden state (B, frames, hidden).

    ``frames`` = :func:`edge.features.audio_pre.num_frames` (samples): one per 20 ms hop, 25 ms receptive field.
    """

    def __init__(self, wav2vec2: Any) -> None:
        super().__init__()
        self.wav2vec2 = wav2vec2

    def forward(self, waveform: "torch.Tensor") -> "torch.Tensor":
        return self.wav2vec2(input_values=waveform, return_dict=True).last_hidden_state
