"""The starter audio encoder (edge.starter.audio_model): the run path's frame contract, ONNX parity, the in-graph
log-mel against a numpy reference on a real clip, and a real (small) learning check."""

from __future__ import annotations

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (the training extras: pip install 'lfmim-edge[train]')")

from edge.build.export import export_onnx  # noqa: E402
from edge.features.audio_pre import num_frames  # noqa: E402
from edge.starter.audio_model import (  # noqa: E402
    HOP_SAMPLES, N_MELS, SAMPLE_RATE, WIN_SAMPLES, AudioEmotionHead, EncoderConfig, LogMel, LogMelEncoder,
    frame_mask, log_mel_numpy,
)

#: In-graph log-mel (float32 Conv1d DFT) vs the float64 numpy reference, absolute, in natural-log units
#: (1e-3 is 0.004 dB).  Measured on a RAVDESS clip: 4.5e-5.
LOGMEL_ATOL = 1e-3

SMALL = EncoderConfig(dim=32, channels=(8, 16), pools=(4, 4), temporal_blocks=2)
#: The real architecture at the smallest widths: shapes and frame counts follow the same code.
TINY = EncoderConfig(dim=8, channels=(2, 4), pools=(4, 4), temporal_blocks=2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors on a shared 2-core machine: two OpenMP threads spin-waiting for each other measured 50x slower
    than one (2.6 s vs 0.04 s per training step of the learning check)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _encoder(config: EncoderConfig = SMALL, seed: int = 0) -> LogMelEncoder:
    torch.manual_seed(seed)
    return LogMelEncoder(config=config).eval()


def test_frames_equal_num_frames_for_every_length():
    enc = _encoder(TINY)
    rng = np.random.default_rng(0)
    lengths = [0, 1, 399, 400, 401, 719, 720, 721, 1040, 15_999, 16_000, 16_001, 64_000]
    lengths += rng.integers(400, 40_000, 60).tolist()
    with torch.no_grad():
        for n in lengths:
            hidden = enc(torch.randn(1, n) * 0.1)
            assert hidden.shape == (1, num_frames(n), TINY.dim), n
    # the mask rule the head uses is the same count
    n = torch.tensor([0, 399, 400, 720, 9_999, 16_000])
    assert frame_mask(n, 49).sum(1).tolist() == [min(49, num_frames(int(v))) for v in n]


def test_default_encoder_block_is_49_frames_of_dim():
    enc = LogMelEncoder(dim=128).eval()
    with torch.no_grad():
        assert enc(torch.zeros(1, SAMPLE_RATE)).shape == (1, num_frames(SAMPLE_RATE), 128) == (1, 49, 128)


def test_a_block_frame_depends_only_on_its_block():
    """Nothing is normalised over the clip: a block's first frames do not change when audio is appended."""
    enc = _encoder()
    x = torch.randn(1, SAMPLE_RATE) * 0.1
    longer = torch.cat([x, torch.randn(1, SAMPLE_RATE) * 0.5], dim=1)
    with torch.no_grad():
        a, b = enc(x), enc(longer)
    context = 8  # frames near the block's end see the appended audio through the CNN's receptive field
    np.testing.assert_allclose(a[0, :-context].numpy(), b[0, :49 - context].numpy(), atol=1e-5)


def test_onnx_export_parity_of_a_random_encoder(tmp_path):
    enc = _encoder(EncoderConfig(dim=48), seed=1)
    for m in enc.modules():  # non-trivial running statistics, so BatchNorm folding is exercised
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    wave = torch.randn(2, SAMPLE_RATE, generator=torch.Generator().manual_seed(0)) * 0.1
    report = export_onnx(enc, [wave], tmp_path / "encoder.onnx", input_names=["waveform"], output_names=["hidden"],
                         dynamic_axes={"waveform": {0: "batch"}, "hidden": {0: "batch"}}, name="logmel-cnn")
    assert report.input_shapes["waveform"] == ("batch", SAMPLE_RATE)
    assert report.output_shapes["hidden"] == ("batch", 49, 48)
    assert report.batches == (2, 5) and report.max_abs_diff < 1e-4


def test_in_graph_log_mel_matches_numpy_on_a_real_clip(shared_data):
    folder = shared_data / "ravdess-speech"
    if not (folder / "labels.csv").is_file():
        pytest.skip(f"RAVDESS speech not found at {folder}")
    from edge.media import read_audio

    with (folder / "labels.csv").open(newline="", encoding="utf-8") as fh:
        row = next(r for r in csv.DictReader(fh) if r["emotion"] == "anger")
    x, sr = read_audio(folder / row["file"])
    assert sr == SAMPLE_RATE and x.size > SAMPLE_RATE
    ref = log_mel_numpy(x)
    with torch.no_grad():
        got = LogMel()(torch.from_numpy(x)[None])[0].numpy()
    assert got.shape == ref.shape == (N_MELS, (x.size - WIN_SAMPLES) // HOP_SAMPLES + 1)
    assert np.abs(got - ref).max() < LOGMEL_ATOL
    assert ref.max() - ref.min() > 10  # real speech and silence in it: the comparison spans the range


def _tones(per_class: int, pitches: list[float], rng: np.random.Generator, samples: int = 4_000):
    t = np.arange(samples) / SAMPLE_RATE
    x, y = [], []
    for label, f0 in enumerate(pitches):
        for _ in range(per_class):
            f = f0 * rng.uniform(0.95, 1.05)
            tone = rng.uniform(0.05, 0.5) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
            x.append(tone + rng.normal(0, 0.01, samples))
            y.append(label)
    order = rng.permutation(len(y))
    return torch.tensor(np.asarray(x)[order], dtype=torch.float32), torch.tensor(y)[order]


def test_three_epochs_learn_to_tell_tones_of_different_pitch_apart():
    rng = np.random.default_rng(0)
    pitches = [220.0, 440.0, 880.0, 1760.0]
    x, y = _tones(16, pitches, rng)
    x_test, y_test = _tones(8, pitches, rng)
    torch.manual_seed(0)
    cfg = EncoderConfig(dim=16, channels=(4, 8), pools=(4, 4), temporal_blocks=1, dropout=0.0)
    enc, head = LogMelEncoder(config=cfg), AudioEmotionHead(cfg.dim, len(pitches), dropout=0.0)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=1e-2)

    def test_accuracy() -> float:
        enc.eval(), head.eval()
        with torch.no_grad():
            return float((head(enc(x_test)).argmax(1) == y_test).float().mean())

    before = test_accuracy()
    for _ in range(3):
        enc.train(), head.train()
        for i in range(0, len(y), 8):
            loss = torch.nn.functional.cross_entropy(head(enc(x[i:i + 8])), y[i:i + 8])
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = test_accuracy()
    assert after >= 0.9, (before, after)
    assert after > before + 0.3
