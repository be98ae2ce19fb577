"""Numpy preprocessing shared by every path: faces, frame sampling, token ids, audio (no torch needed)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from edge.errors import InputError
from edge.features import audio_pre, text_pre, vision_pre
from edge.features.audio_pre import fit_frames, num_frames, resample
from edge.features.text_pre import SpecialIds, batch_ids, encode_texts, pad_ids
from edge.features.vision_pre import IMAGENET_MEAN, IMAGENET_STD, normalize_faces, sample_frames

# ---------------------------------------------------------------------------------------------------- vision


def test_normalize_faces_layout_and_values():
    faces = np.zeros((2, 224, 224, 3), dtype=np.uint8)
    faces[1, ..., 0] = 255  # second face: pure red
    x = normalize_faces(faces)
    assert x.shape == (2, 3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[0, :, 0, 0], -IMAGENET_MEAN / IMAGENET_STD, rtol=1e-6)
    np.testing.assert_allclose(x[1, 0, 5, 7], (1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], rtol=1e-6)
    assert normalize_faces(faces[0]).shape == (1, 3, 224, 224)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((224, 224, 3), dtype=np.float32), "uint8"),
    (np.zeros((1, 3, 224, 224), dtype=np.uint8), r"\(N, 224, 224, 3\)"),
    (np.zeros((1, 112, 112, 3), dtype=np.uint8), "224 x 224"),
])
def test_normalize_faces_rejects_bad_input(bad, match):
    with pytest.raises(InputError, match=match):
        normalize_faces(bad)


@pytest.mark.parametrize("n", [1, 7, 64, 65, 300, 1001])
def test_sample_frames_deterministic_is_evenly_spread(n):
    idx = sample_frames(n)
    assert idx.shape == (64,) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() < n
    assert np.all(np.diff(idx) >= 0)
    np.testing.assert_array_equal(idx, sample_frames(n))
    # each group of 8 lies in its own eighth of the clip
    for s, group in enumerate(idx.reshape(8, 8)):
        assert group.min() >= np.floor(s * n / 8) and group.max() <= max(np.ceil((s + 1) * n / 8) - 1, 0)
    if n >= 64:
        assert len(np.unique(idx)) == 64  # no repeats when there are enough frames


def test_sample_frames_random_within_segments():
    n = 400
    rng = np.random.default_rng(0)
    draws = np.stack([sample_frames(n, rng=rng) for _ in range(50)])
    assert draws.shape == (50, 64)
    for s in range(8):
        seg = draws[:, s * 8:(s + 1) * 8]
        assert seg.min() >= s * 50 and seg.max() < (s + 1) * 50
    assert len(np.unique(draws)) > 300  # random, not the same frames every time
    np.testing.assert_array_equal(sample_frames(n, rng=np.random.default_rng(3)),
                                  sample_frames(n, rng=np.random.default_rng(3)))
    assert sample_frames(n, 4, 2).shape == (8,)


def test_sample_frames_rejects_empty_clip():
    with pytest.raises(InputError, match="at least one frame"):
        sample_frames(0)


# ---------------------------------------------------------------------------------------------------- text

SPECIAL = SpecialIds(cls=101, sep=102, pad=0)


def test_pad_ids_short_text():
    ids, mask = pad_ids([5, 6, 7], SPECIAL)
    assert ids.shape == mask.shape == (80,) and ids.dtype == mask.dtype == np.int64
    assert ids[:5].tolist() == [101, 5, 6, 7, 102] and not ids[5:].any()
    assert mask[:5].all() and not mask[5:].any()


def test_pad_ids_truncates_before_sep():
    ids, mask = pad_ids(list(range(1000, 1100)), SPECIAL)
    assert ids[0] == 101 and ids[-1] == 102 and mask.all()
    assert ids[1:79].tolist() == list(range(1000, 1078))  # [CLS] + 78 + [SEP]


def test_pad_ids_strips_existing_special_tokens_and_empty_text():
    ids, _ = pad_ids([101] + list(range(1000, 1100)) + [102], SPECIAL, has_special=True)
    assert ids[1] == 1000 and ids[78] == 1077 and ids[79] == 102
    ids, mask = pad_ids([], SPECIAL, length=4)
    assert ids.tolist() == [101, 102, 0, 0] and mask.tolist() == [1, 1, 0, 0]


def test_batch_ids_feeds():
    feeds = batch_ids([[5], [5, 6, 7, 8]], SPECIAL)
    assert set(feeds) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.shape == (2, 80) and v.dtype == np.int64 for v in feeds.values())
    assert feeds["attention_mask"].sum(axis=1).tolist() == [3, 6] and not feeds["token_type_ids"].any()
    with pytest.raises(InputError, match="empty"):
        batch_ids([], SPECIAL)


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "我", "很", "高", "兴", "你", "好", "hello", "world", "##s", "。"]


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return d


def test_encode_texts_with_tokenizers_package(vocab_dir):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.BertWordPieceTokenizer(str(vocab_dir / "vocab.txt"))
    feeds = encode_texts(tok, ["我很高兴 hello worlds。", "你好" * 100])
    assert feeds["input_ids"][0, :10].tolist() == [2, 5, 6, 7, 8, 11, 12, 13, 14, 3]
    assert feeds["attention_mask"][0].sum() == 10
    assert feeds["input_ids"][1, -1] == 3 and feeds["attention_mask"][1].all()
    with pytest.raises(InputError, match="one string"):
        encode_texts(tok, "我很高兴")


def test_encode_texts_matches_transformers_padding(vocab_dir):
    transformers = pytest.importorskip("transformers")
    tok = transformers.BertTokenizerFast.from_pretrained(str(vocab_dir))
    texts = ["我很高兴 hello worlds。", "你好"]
    ours = encode_texts(tok, texts)
    ref = tok(texts, padding="max_length", truncation=True, max_length=80, return_tensors="np")
    for key in ours:
        np.testing.assert_array_equal(ours[key], ref[key])


# ---------------------------------------------------------------------------------------------------- audio


def _tone(freq, sr, seconds=1.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_and_amplitude(y, sr):
    core = y[len(y) // 8: -len(y) // 8]  # away from the edges
    spectrum = np.abs(np.fft.rfft(core * np.hanning(core.size)))
    return np.fft.rfftfreq(core.size, 1 / sr)[spectrum.argmax()], np.sqrt(2 * np.mean(core.astype(np.float64) ** 2))


@pytest.mark.parametrize("sr_in, freq", [(44_100, 1000.0), (48_000, 440.0), (8_000, 1000.0), (22_050, 3000.0)])
def test_resample_preserves_a_tone(sr_in, freq):
    y = resample(_tone(freq, sr_in), sr_in, 16_000)
    assert y.dtype == np.float32 and y.shape == (16_000,)
    peak, amplitude = _peak_and_amplitude(y, 16_000)
    assert peak == pytest.approx(freq, abs=2.0)
    assert amplitude == pytest.approx(0.5, rel=0.01)
    # aligned in time too: equals the ideal tone at 16 kHz
    np.testing.assert_allclose(y[2000:-2000], _tone(freq, 16_000)[2000:-2000], atol=1e-3)


def test_resample_removes_content_above_the_new_nyquist():
    y = resample(_tone(11_000.0, 48_000), 48_000, 16_000)  # 11 kHz would alias to 5 kHz
    assert np.abs(y[2000:-2000]).max() < 1e-3


def test_resample_identity_and_bad_rates():
    x = _tone(440.0, 16_000, 0.1)
    np.testing.assert_array_equal(resample(x, 16_000), x)
    with pytest.raises(InputError, match="positive integers"):
        resample(x, 0)
    with pytest.raises(InputError, match="mono"):
        resample(np.zeros((100, 2), np.float32), 8000)


def _decode_flac(path):
    try:
        import soundfile
    except ImportError:
        soundfile = None
    if soundfile is not None:
        data, sr = soundfile.read(str(path), dtype="int16", always_2d=True)
        return data, sr
    if shutil.which("ffmpeg"):
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-acodec", "pcm_s16le", "-"],
                             check=True, capture_output=True).stdout
        probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                                "stream=sample_rate,channels", "-of", "json", str(path)],
                               check=True, capture_output=True, text=True).stdout
        stream = json.loads(probe)["streams"][0]
        data = np.frombuffer(raw, dtype=np.int16).reshape(-1, int(stream["channels"]))
        return data, int(stream["sample_rate"])
    pytest.skip("cannot decode FLAC: install the soundfile package (pip install soundfile) or ffmpeg")


def test_resample_real_speech_round_trip(shared_data):
    clips = sorted((shared_data / "ravdess-speech").glob("Actor_01/*.flac"))
    if not clips:
        pytest.skip(f"no FLAC clips under {shared_data / 'ravdess-speech'}")
    data, sr = _decode_flac(clips[0])
    speech = audio_pre.to_mono(data)
    assert sr == 16_000 and speech.dtype == np.float32 and np.abs(speech).max() <= 1.0
    up = resample(speech, sr, 44_100)
    assert up.shape == (int(np.ceil(speech.size * 44_100 / sr)),)
    back = resample(up, 44_100, sr)
    assert back.size - speech.size in (0, 1)  # each step rounds its length up
    back = back[: speech.size]
    # speech has little energy near 8 kHz: the round trip through 44.1 kHz keeps the signal (SNR > 30 dB)
    snr = 10 * np.log10(np.sum(speech.astype(np.float64) ** 2) / np.sum((back - speech).astype(np.float64) ** 2))
    assert snr > 30, snr
    prepared = audio_pre.prepare_waveform(data, sr, do_normalize=True)
    var = speech.astype(np.float64).var()
    assert abs(prepared.mean()) < 1e-4
    assert prepared.std() == pytest.approx(np.sqrt(var / (var + 1e-7)), rel=1e-4)  # transformers' eps of 1e-7


def test_pcm_conversion_and_mono_mixdown():
    pcm = np.array([[-32768, 32767], [0, 16384]], dtype=np.int16)
    x = audio_pre.to_float32(pcm)
    assert x.dtype == np.float32 and x[0, 0] == -1.0 and x[1, 1] == 0.5
    np.testing.assert_allclose(audio_pre.to_mono(pcm), [(-1 + 32767 / 32768) / 2, 0.25])
    with pytest.raises(InputError, match="more channels than samples"):
        audio_pre.to_mono(np.zeros((2, 1000), np.int16))
    with pytest.raises(InputError, match="dtype"):
        audio_pre.to_float32(np.zeros(4, dtype=np.complex64))


def test_normalize_and_do_normalize(tmp_path):
    y = audio_pre.normalize(_tone(440.0, 16_000) + 0.3)
    assert abs(y.mean()) < 1e-5 and y.std() == pytest.approx(1.0, rel=1e-4)
    raw = _tone(440.0, 16_000, 0.5)
    np.testing.assert_array_equal(audio_pre.prepare_waveform(raw, 16_000, do_normalize=False), raw)
    assert audio_pre.read_do_normalize(tmp_path) is False
    (tmp_path / "preprocessor_config.json").write_text('{"do_normalize": true}')
    assert audio_pre.read_do_normalize(tmp_path) is True


def test_num_frames_follows_wav2vec2_front_end():
    assert num_frames(399) == 0 and num_frames(400) == 1 and num_frames(720) == 2  # 25 ms window, 20 ms hop
    assert num_frames(16_000) == 49 and num_frames(64_000) == 199


def test_fit_frames_samples_or_pads():
    x = np.arange(250 * 3, dtype=np.float32).reshape(250, 3)
    y = fit_frames(x)
    assert y.shape == (100, 3)
    rows = y[:, 0] / 3
    assert rows[0] == 0 and np.all(np.diff(rows) >= 2) and rows[-1] < 250  # evenly spread, in order
    short = fit_frames(x[:30])
    assert short.shape == (100, 3) and np.array_equal(short[:30], x[:30]) and not short[30:].any()
    np.testing.assert_array_equal(fit_frames(x[:100]), x[:100])
    with pytest.raises(InputError, match="frames, features"):
        fit_frames(np.zeros(10))


def test_preprocessing_modules_do_not_import_torch():
    code = ("import sys; import edge.features.audio_pre, edge.features.text_pre, edge.features.vision_pre; "
            "sys.exit('torch' in sys.modules)")
    import sys
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert vision_pre.SEGMENTS * vision_pre.PER_SEGMENT == 64 and text_pre.TEXT_LENGTH == 80
