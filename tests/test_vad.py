"""Silero VAD on ONNX Runtime and the streaming segmenter, on real speech (espeak-ng, RAVDESS) and real silence.

Needs the model (``pip install --no-deps silero-vad==6.2.3``) and, for synthetic speech, the espeak-ng program
(``apt-get install -y espeak-ng sox ffmpeg``); tests skip with that message where they are absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edge.errors import InputError
from edge.media import read_audio
from edge.stream import vad as vad_module
from edge.stream.vad import INSTALL, SileroVAD, SpeechEnd, SpeechStart, VADSegmenter, find_model

SR = 16_000
TOLERANCE_S = 0.150  # segment ends vs. the speech's true boundaries
SENTENCE = "the quick brown fox jumps over the lazy dog"
LEAD_S, TAIL_S = 1.0, 1.5  # silence added before and after the speech


def _model_or_skip() -> None:
    try:
        find_model()
    except InputError:
        pytest.skip(f"the Silero VAD model is not installed; install it with: {INSTALL}")


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    _model_or_skip()
    return SileroVAD()


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[np.ndarray, float, float]:
    """(signal with silence around espeak-ng speech, true speech start, true speech end) in seconds."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed; install it with: apt-get install -y espeak-ng sox ffmpeg")
    from edge.testmedia import synth_speech

    wav = synth_speech(SENTENCE, tmp_path_factory.mktemp("vad") / "fox.wav")
    x, _ = read_audio(wav)
    start, end = _energy_bounds(x)
    signal = np.concatenate([np.zeros(int(LEAD_S * SR), np.float32), x, np.zeros(int(TAIL_S * SR), np.float32)])
    return signal, LEAD_S + start, LEAD_S + end


def _energy_bounds(x: np.ndarray, frame: int = 160, floor: float = 0.01) -> tuple[float, float]:
    """First and last 10 ms frame whose RMS exceeds ``floor`` x the loudest frame's, in seconds."""
    frames = x[: x.size // frame * frame].reshape(-1, frame)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))
    active = np.flatnonzero(rms > floor * rms.max())
    return active[0] * frame / SR, (active[-1] + 1) * frame / SR


def _run(segmenter: VADSegmenter, signal: np.ndarray, chunk: int, t0: float = 0.0) -> list:
    events = []
    for i in range(0, signal.size, chunk):
        events += segmenter.push(signal[i:i + chunk], t0 + i / SR)
    return events + segmenter.flush()


def _summary(events: list) -> list[tuple]:
    return [(type(e).__name__, round(e.t, 6)) for e in events]


# ------------------------------------------------------------------------------------------------- the model


def test_model_inputs_and_probabilities(vad, speech):
    names = {i.name: i.shape for i in vad.model.session.get_inputs()}
    assert set(names) == {"input", "state", "sr"} and names["state"][0] == 2 and names["state"][2] == 128
    signal, start, end = speech
    vad.reset()
    probs = np.array([vad(signal[i:i + 512]) for i in range(0, signal.size - 511, 512)])
    t = np.arange(probs.size) * 512 / SR
    assert ((probs >= 0) & (probs <= 1)).all()
    assert probs[t < start - 0.2].max() < 0.2  # leading silence
    assert np.median(probs[(t > start + 0.2) & (t < end - 0.2)]) > 0.8  # speech


def test_reset_repeats_probabilities(vad, speech):
    signal = speech[0][: 40 * 512]
    vad.reset()
    first = [vad(signal[i:i + 512]) for i in range(0, signal.size, 512)]
    vad.reset()
    second = [vad(signal[i:i + 512]) for i in range(0, signal.size, 512)]
    assert first == second


def test_window_must_be_512_samples(vad):
    with pytest.raises(InputError, match="exactly 512 samples"):
        vad(np.zeros(480, np.float32))


def test_missing_model_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"Silero VAD model not found at .*nope\.onnx"):
        SileroVAD(tmp_path / "nope.onnx")


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(vad_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=re.escape(INSTALL)):
        SileroVAD()


def test_run_path_never_imports_torch():
    _model_or_skip()
    code = ("import sys, numpy as np; from edge.stream.vad import SileroVAD; v = SileroVAD(); "
            "v(np.zeros(512, np.float32)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------- the segmenter


def test_one_segment_at_the_speech_boundaries(vad, speech):
    signal, start, end = speech
    events = _run(VADSegmenter(vad), signal, 512)
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd], _summary(events)
    began, ended = events
    assert abs(began.t - start) <= TOLERANCE_S, (began.t, start)
    assert abs(ended.t - end) <= TOLERANCE_S, (ended.t, end)
    assert ended.start == began.t
    assert ended.audio.dtype == np.float32
    assert ended.audio.size == round((ended.t - ended.start) * SR)
    first = round(ended.start * SR)
    np.testing.assert_array_equal(ended.audio, signal[first:first + ended.audio.size])


def test_timestamps_follow_t0(vad, speech):
    signal = speech[0]
    base = _run(VADSegmenter(vad), signal, 512)
    shifted = _run(VADSegmenter(vad), signal, 512, t0=100.0)
    assert [type(e) for e in shifted] == [type(e) for e in base]
    for a, b in zip(base, shifted):
        assert b.t == pytest.approx(a.t + 100.0, abs=1e-9)


@pytest.mark.parametrize("noise_rms", [0.0, 0.003])
def test_silence_and_low_noise_give_no_segment(vad, noise_rms):
    rng = np.random.default_rng(0)
    signal = (rng.standard_normal(4 * SR) * noise_rms).astype(np.float32)
    assert _run(VADSegmenter(vad), signal, 1000) == []


def test_real_ravdess_clip_is_one_segment(vad, shared_data):
    clips = sorted((shared_data / "ravdess-speech").glob("Actor_*/*.flac"))
    if not clips:
        pytest.skip(f"no RAVDESS FLAC files under {shared_data / 'ravdess-speech'}")
    x, _ = read_audio(clips[0])
    events = _run(VADSegmenter(vad), x, 1024)
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd], _summary(events)
    assert 0.0 <= events[0].t < events[1].t <= x.size / SR


@pytest.mark.parametrize("chunk", [160, 4000, 7])
def test_events_do_not_depend_on_chunk_size(vad, speech, chunk):
    signal = speech[0]
    reference = _run(VADSegmenter(vad), signal, 512)
    events = _run(VADSegmenter(vad), signal, chunk)
    assert [type(e) for e in events] == [type(e) for e in reference]
    for a, b in zip(events, reference):
        assert a.t == pytest.approx(b.t, abs=1e-9)
        if isinstance(a, SpeechEnd):
            np.testing.assert_array_equal(a.audio, b.audio)


def test_reset_between_streams(vad, speech):
    signal = speech[0]
    fresh = _run(VADSegmenter(vad), signal, 512)
    segmenter = VADSegmenter(vad)
    half = signal.size // 2  # in the middle of the speech
    segmenter.push(signal[:half], 0.0)
    segmenter.reset()
    assert segmenter.push(np.zeros(SR, np.float32), 0.0) + segmenter.flush() == []  # nothing left of stream one
    again = _run(segmenter, signal, 512)
    assert _summary(again) == _summary(fresh)


def test_two_streams_share_one_model(vad, speech):
    signal = speech[0]
    alone = _summary(_run(VADSegmenter(vad.new_stream()), signal, 512))
    a, b = VADSegmenter(vad.new_stream()), VADSegmenter(vad.new_stream())
    events_a, events_b = [], []
    quiet = np.zeros_like(signal)
    for i in range(0, signal.size, 512):  # interleaved: one stream speaks, the other is silent
        events_a += a.push(signal[i:i + 512], i / SR)
        events_b += b.push(quiet[i:i + 512], i / SR)
    events_a += a.flush()
    events_b += b.flush()
    assert _summary(events_a) == alone and events_b == []


def test_short_blip_is_dropped(vad, speech):
    signal, start, _ = speech
    blip = signal[: int((start + 0.12) * SR)]  # 120 ms of speech, below min_speech_ms=250
    padded = np.concatenate([blip, np.zeros(SR, np.float32)])
    assert _run(VADSegmenter(vad, min_speech_ms=250), padded, 512) == []


def test_long_speech_is_cut_at_max_speech(vad, speech):
    signal, start, end = speech
    events = _run(VADSegmenter(vad, max_speech_s=1.0), signal, 512)
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert len(ends) >= 2
    assert all(e.audio.size <= SR + 2 * 512 for e in ends)


def test_bad_arguments(vad):
    with pytest.raises(InputError, match="threshold must lie strictly between 0 and 1"):
        VADSegmenter(vad, threshold=1.5)
    with pytest.raises(InputError, match="neg_threshold must lie between 0 and threshold"):
        VADSegmenter(vad, threshold=0.5, neg_threshold=0.7)
    with pytest.raises(InputError, match=r"mono samples of shape \(n,\)"):
        VADSegmenter(vad).push(np.zeros((512, 2), np.float32), 0.0)
