"""Audio preprocessing in plain numpy (run path; never imports torch).

Waveforms are mixed down to mono, converted to float32 in [-1, 1), resampled to 16 kHz with a windowed-sinc
polyphase filter, and normalised to zero mean and unit variance when the encoder's feature extractor says
``do_normalize``.  wav2vec2's convolutional front-end then yields one 768-d frame per 20 ms hop with a 25 ms
receptive field; :func:`fit_frames` brings a clip's frames to the paper's fixed 100 (uniform sampling or zero padding).
"""

from __future__ import annotations

import json
import logging
from math import gcd
from pathlib import Path

import numpy as np

from edge.errors import InputError

log = logging.getLogger("edge")

#: Sample rate the audio encoder expects, in Hz.
SAMPLE_RATE = 16_000
#: wav2vec2 frame hop and receptive field, in seconds (320 and 400 samples at 16 kHz).
HOP_SECONDS = 0.020
WINDOW_SECONDS = 0.025
#: Audio frames per sample of the paper's feature contract.
AUDIO_FRAMES = 100
#: Length of the audio window the exported encoder takes, in seconds (64,000 samples at 16 kHz).
ENCODER_WINDOW_SECONDS = 4.0
#: wav2vec2's convolutional feature encoder: kernel sizes and strides of its seven layers.
CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)
#: Resampling filter: zero crossings of the sinc on each side, and the Kaiser window's beta.
_ZERO_CROSSINGS = 16
_KAISER_BETA = 8.6
_CHUNK = 16_384  # output samples computed at once (bounds the memory of the polyphase gather)


def to_float32(x: np.ndarray) -> np.ndarray:
    """PCM samples -> float32 in [-1, 1): int16 / 32768, int32 / 2**31, uint8 centred at 128; floats pass through."""
    x = np.asarray(x)
    if x.dtype == np.int16:
        return x.astype(np.float32) / np.float32(32768.0)
    if x.dtype == np.int32:
        return (x.astype(np.float64) / 2**31).astype(np.float32)
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) / np.float32(128.0)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    raise InputError(f"audio samples must be int16, int32, uint8 or float, got dtype {x.dtype}")


def to_mono(x: np.ndarray) -> np.ndarray:
    """(samples,) or (samples, channels) -> (samples,) float32, the mean of the channels."""
    x = to_float32(x)
    if x.ndim == 1:
        return x
    if x.ndim == 2:
        if x.shape[1] > x.shape[0]:
            raise InputError(
                f"audio of shape {x.shape} has more channels than samples; pass (samples, channels), e.g. x.T"
            )
        return x.mean(axis=1, dtype=np.float64).astype(np.float32)
    raise InputError(f"audio must be (samples,) or (samples, channels), got shape {x.shape}")


def _lowpass(up: int, down: int) -> np.ndarray:
    """Kaiser-windowed sinc low-pass at the lower Nyquist of the two rates, sampled at ``up`` x the input rate."""
    rate = max(up, down)
    half = _ZERO_CROSSINGS * rate
    t = np.arange(-half, half + 1, dtype=np.float64)
    h = np.sinc(t / rate) / rate * np.kaiser(2 * half + 1, _KAISER_BETA)
    return h * up  # gain `up` makes up for the zeros that upsampling inserts


def resample(x: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono signal from ``sr_in`` to ``sr_out`` Hz (rational polyphase, windowed sinc); float32 out.

    The output has ``ceil(len(x) * sr_out / sr_in)`` samples aligned with the input (no delay).  Content above the
    lower of the two Nyquist frequencies is filtered out before decimation (no aliasing).
    """
    x = to_float32(x)
    if x.ndim != 1:
        raise InputError(f"resample takes a mono signal (samples,), got shape {x.shape}; mix down with to_mono first")
    if int(sr_in) != sr_in or int(sr_out) != sr_out or sr_in <= 0 or sr_out <= 0:
        raise InputError(f"sample rates must be positive integers in Hz, got {sr_in} and {sr_out}")
    g = gcd(int(sr_in), int(sr_out))
    up, down = int(sr_out) // g, int(sr_in) // g
    if up == down:
        return x.copy()
    h = _lowpass(up, down)
    half = (h.size - 1) // 2
    taps = -(-h.size // up)  # input samples touched by one output sample
    phases = np.zeros(taps * up)
    phases[: h.size] = h
    phases = phases.reshape(taps, up).T  # phases[p, j] = h[p + j * up]
    n_out = -(-x.size * up // down)
    padded = np.concatenate([np.zeros(taps, dtype=np.float64), x.astype(np.float64), np.zeros(taps)])
    out = np.empty(n_out, dtype=np.float32)
    j = np.arange(taps)
    for start in range(0, n_out, _CHUNK):
        n = np.arange(start, min(start + _CHUNK, n_out), dtype=np.int64)
        t = n * down + half  # position in the upsampled signal, shifted by the filter's delay
        m_hi, p = np.divmod(t, up)  # newest input sample that contributes, and the filter phase
        idx = m_hi[:, None] - j[None, :] + taps  # + taps: offset of the zero padding
        idx = np.clip(idx, 0, padded.size - 1)
        out[n] = np.einsum("ij,ij->i", padded[idx], phases[p])
    return out


def normalize(x: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-variance float32 waveform, as transformers' Wav2Vec2FeatureExtractor does (eps 1e-7)."""
    x = to_float32(x)
    x64 = x.astype(np.float64)
    return ((x64 - x64.mean()) / np.sqrt(x64.var() + 1e-7)).astype(np.float32)


def prepare_waveform(x: np.ndarray, sr: int, *, do_normalize: bool) -> np.ndarray:
    """Raw samples (any PCM dtype, mono or (samples, channels)) at ``sr`` Hz -> the encoder's float32 16 kHz input."""
    mono = resample(to_mono(x), sr, SAMPLE_RATE)
    return normalize(mono) if do_normalize else mono


def read_do_normalize(model_dir: str | Path, *, default: bool = False) -> bool:
    """``do_normalize`` from a model directory's ``preprocessor_config.json`` (``default`` when the file is absent)."""
    path = Path(model_dir) / "preprocessor_config.json"
    if not path.is_file():
        log.info("%s not found; assuming do_normalize=%s", path, default)
        return default
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("do_normalize", default))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


def num_frames(samples: int) -> int:
    """Frames wav2vec2's convolutional front-end yields for ``samples`` samples (0 when shorter than 25 ms)."""
    length = int(samples)
    for kernel, stride in zip(CONV_KERNELS, CONV_STRIDES):
        if length < kernel:
            return 0
        length = (length - kernel) // stride + 1
    return length


def uniform_indices(steps: int, length: int) -> np.ndarray:
    """The rows the paper's rule keeps when ``steps`` > ``length``: nearest to ``linspace(0, steps - 1, length)``
    (first and last always kept).  The one definition used by the feature store, extraction and the live loop."""
    return np.rint(np.linspace(0, steps - 1, num=length)).astype(np.int64)


def fit_frames(x: np.ndarray, length: int = AUDIO_FRAMES) -> np.ndarray:
    """(T, D) frames -> (length, D): evenly spaced frames (:func:`uniform_indices`) when T > length, else zero
    vectors appended (the paper's rule)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise InputError(f"fit_frames takes a (frames, features) array, got shape {x.shape}")
    if length < 1:
        raise InputError(f"length must be positive, got {length}")
    frames = x.shape[0]
    if frames > length:
        return x[uniform_indices(frames, length)]
    out = np.zeros((length, x.shape[1]), dtype=x.dtype)
    out[:frames] = x
    return out
