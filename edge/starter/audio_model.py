"""The starter profile's audio encoder: raw 16 kHz waveform -> log-mel frames -> small CNN -> frame features
(build path; torch).

:class:`LogMelEncoder` computes its log-mel spectrogram inside the graph, so the exported ONNX file takes the run
path's ``waveform`` float32 (B, samples) and returns ``hidden`` (B, frames, dim) with
``frames == edge.features.audio_pre.num_frames(samples)`` for every length:

- STFT as a Conv1d with fixed Hann-windowed cosine and sine kernels (kernel 400 = 25 ms, stride 320 = 20 ms, no
  padding), i.e. the 201-bin DFT of each 25 ms frame; ``(samples - 400) // 320 + 1`` frames, which is exactly
  ``num_frames`` (wav2vec2's seven-layer front-end has the same count for every length);
- power spectrum -> 64 triangular HTK-mel bands (fixed matrix built in numpy) -> ``log(mel + LOG_OFFSET)``;
- a learned per-band BatchNorm (running statistics at inference: nothing depends on the rest of the clip, so a
  1 s block gives the same frames whatever surrounds it);
- a 2-D CNN over (mel, time) that pools only along the mel axis, then residual 1-D temporal convolutions with
  "same" padding: the time axis keeps one output per STFT frame.

:class:`AudioEmotionHead` (masked attention pooling + linear, 7 classes) is used only for training and evaluation;
the run path reads the encoder's frames and LFMIM classifies them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

#: Sample rate the encoder takes, in Hz.
SAMPLE_RATE = 16_000
#: STFT window and hop in samples (25 ms and 20 ms at 16 kHz); also the DFT size (201 frequency bins).
WIN_SAMPLES = 400
HOP_SAMPLES = 320
N_FFT = WIN_SAMPLES
#: Mel filter bank: bands and edges in Hz.
N_MELS = 64
F_MIN = 20.0
F_MAX = 8_000.0
#: Added to the mel power before the log (about -80 dB below a full-scale sine's peak bin power of 1e4).
LOG_OFFSET = 1e-4
#: Encoder name in profiles.
ENCODER_NAME = "logmel-cnn"


def hann_window(length: int = WIN_SAMPLES) -> np.ndarray:
    """Periodic Hann window (float64), as ``torch.hann_window(length)``."""
    n = np.arange(length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


def dft_kernels(win: int = WIN_SAMPLES, n_fft: int = N_FFT) -> np.ndarray:
    """(2 * bins, 1, win) float64: Hann-windowed cosine rows then sine rows of the ``n_fft``-point real DFT."""
    bins = n_fft // 2 + 1
    n = np.arange(win, dtype=np.float64)
    k = np.arange(bins, dtype=np.float64)[:, None]
    phase = 2.0 * np.pi * k * n[None, :] / n_fft
    w = hann_window(win)[None, :]
    return np.concatenate([np.cos(phase) * w, -np.sin(phase) * w])[:, None, :]


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_matrix(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE, f_min: float = F_MIN,
               f_max: float = F_MAX) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float64: triangular filters, equally spaced on the HTK mel scale, peak 1."""
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None)


def log_mel_numpy(waveform: np.ndarray) -> np.ndarray:
    """Reference log-mel of a mono 16 kHz signal, (N_MELS, frames) float64: framing, Hann, rfft, power, mel, log."""
    x = np.asarray(waveform, dtype=np.float64).reshape(-1)
    frames = 0 if x.size < WIN_SAMPLES else (x.size - WIN_SAMPLES) // HOP_SAMPLES + 1
    idx = np.arange(frames)[:, None] * HOP_SAMPLES + np.arange(WIN_SAMPLES)[None, :]
    spec = np.fft.rfft(x[idx] * hann_window()[None, :], n=N_FFT, axis=1)
    power = spec.real ** 2 + spec.imag ** 2
    return np.log(mel_matrix() @ power.T + LOG_OFFSET)


class LogMel(nn.Module):
    """(B, samples) waveform -> (B, N_MELS, frames) log-mel power; fixed buffers, no learned weights."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("dft", torch.from_numpy(dft_kernels()).float())
        self.register_buffer("mel", torch.from_numpy(mel_matrix()).float())
        self.bins = N_FFT // 2 + 1

    def power(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, N_MELS, frames) mel power (before the log)."""
        spec = nn.functional.conv1d(waveform.unsqueeze(1), self.dft, stride=HOP_SAMPLES)  # (B, 2*bins, T)
        power = spec[:, : self.bins] ** 2 + spec[:, self.bins:] ** 2
        return torch.matmul(self.mel, power)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.log(self.power(waveform) + LOG_OFFSET)


@dataclass(frozen=True)
class EncoderConfig:
    """The encoder's architecture (saved with its weights)."""

    dim: int = 128
    channels: tuple[int, ...] = (16, 32)
    #: Mel-axis pooling after each 2-D conv (the time axis is never pooled).
    pools: tuple[int, ...] = (4, 4)
    temporal_blocks: int = 3
    kernel: int = 3
    dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "channels": list(self.channels), "pools": list(self.pools), "encoder": ENCODER_NAME, "sample_rate": SAMPLE_RATE,
                "win_samples": WIN_SAMPLES, "hop_samples": HOP_SAMPLES, "n_mels": N_MELS, "log_offset": LOG_OFFSET}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EncoderConfig":
        known = {"dim", "channels", "pools", "temporal_blocks", "kernel", "dropout"}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("channels", "pools"):
            if key in values:
                values[key] = tuple(int(c) for c in values[key])
        return cls(**values)


class _TemporalBlock(nn.Module):
    """Residual Conv1d -> BN -> ReLU with "same" padding (dilated): the frame count does not change."""

    def __init__(self, dim: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False)
        self.bn = nn.BatchNorm1d(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(torch.relu(self.bn(self.conv(x))))


class LogMelEncoder(nn.Module):
    """``waveform`` (B, samples) float32 at 16 kHz -> ``hidden`` (B, num_frames(samples), dim).

    ``spec_augment`` (training only) masks random mel bands and time spans of the normalised log-mel.
    """

    def __init__(self, dim: int = 128, *, config: EncoderConfig | None = None) -> None:
        super().__init__()
        cfg = config or EncoderConfig(dim=dim)
        if cfg.kernel % 2 != 1:
            raise ValueError(f"kernel must be odd so the time axis keeps its length, got {cfg.kernel}")
        if len(cfg.pools) != len(cfg.channels) or math.prod(cfg.pools) > N_MELS:
            raise ValueError(f"pools {cfg.pools} must give one mel pooling per conv {cfg.channels} and divide {N_MELS}")
        self.config = cfg
        self.logmel = LogMel()
        self.norm = nn.BatchNorm1d(N_MELS)
        layers: list[nn.Module] = []
        c_in, bands = 1, N_MELS
        for c_out, pool in zip(cfg.channels, cfg.pools):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.MaxPool2d((pool, 1))]
            c_in, bands = c_out, bands // pool
        self.cnn = nn.Sequential(*layers)
        self.proj = nn.Sequential(nn.Conv1d(c_in * bands, cfg.dim, 1, bias=False), nn.BatchNorm1d(cfg.dim), nn.ReLU())
        self.temporal = nn.Sequential(*[_TemporalBlock(cfg.dim, cfg.kernel, 2 ** i, cfg.dropout)
                                        for i in range(cfg.temporal_blocks)])
        self.spec_augment = False

    @property
    def dim(self) -> int:
        return self.config.dim

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        """SpecAugment: per example, up to 2 mel-band masks of <= 8 bands and 2 time masks of <= 10 frames."""
        b, f, t = x.shape
        keep = torch.ones_like(x)
        for _ in range(2):
            width = torch.randint(0, 9, (b, 1, 1), device=x.device)
            start = (torch.rand(b, 1, 1, device=x.device) * (f - width)).long()
            band = torch.arange(f, device=x.device)[None, :, None]
            keep = keep * ~((band >= start) & (band < start + width))
            width = torch.randint(0, min(11, t + 1), (b, 1, 1), device=x.device)
            start = (torch.rand(b, 1, 1, device=x.device) * (t - width + 1)).long()
            frame = torch.arange(t, device=x.device)[None, None, :]
            keep = keep * ~((frame >= start) & (frame < start + width))
        return x * keep

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.shape[-1] < WIN_SAMPLES:  # shorter than one 25 ms window: no frame (static under tracing)
            return waveform.new_zeros(waveform.shape[0], 0, self.config.dim)
        return self.encode_logmel(self.logmel(waveform))

    def encode_logmel(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, N_MELS, T) log-mel -> (B, T, dim): everything after the fixed front-end (training feeds this
        from precomputed mel power; the frames of a 1 s block at a 20 ms-aligned offset are the clip's frames)."""
        x = self.norm(logmel)  # (B, mels, T)
        if self.training and self.spec_augment:
            x = self._mask(x)
        x = self.cnn(x.unsqueeze(1))  # (B, C, bands, T)
        x = x.flatten(1, 2)  # (B, C * bands, T)
        x = self.temporal(self.proj(x))
        return x.transpose(1, 2)  # (B, T, dim)


class AudioEmotionHead(nn.Module):
    """(B, frames, dim) frames (+ optional (B, frames) bool mask of real frames) -> (B, classes) logits.

    Masked attention pooling then a linear layer; training and evaluation only.
    """

    def __init__(self, dim: int = 128, classes: int = 7, dropout: float = 0.3) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(dim, classes)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.score(hidden).squeeze(-1)  # (B, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, -math.inf)
        weights = torch.softmax(scores, dim=1)
        if mask is not None:
            weights = torch.nan_to_num(weights)  # a row with no real frame pools to zero
        pooled = torch.einsum("bt,btd->bd", weights, hidden)
        return self.out(self.drop(pooled))


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B,) real sample counts -> (B, frames) bool mask of the frames that cover real audio (num_frames rule)."""
    real = torch.clamp(torch.div(lengths - WIN_SAMPLES, HOP_SAMPLES, rounding_mode="floor") + 1, min=0)
    return torch.arange(frames, device=lengths.device)[None, :] < real[:, None]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
