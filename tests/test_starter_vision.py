"""The starter vision encoder (edge.starter.vision_model) and its training script's pieces: the in-graph grey
conversion against numpy, ONNX export parity, a real learning check on planted patterns, real FER2013 faces."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (the training extras: pip install 'lfmim-edge[train]')")
F = torch.nn.functional

from edge.build.export import export_onnx  # noqa: E402
from edge.features.align import similarity_transform, template  # noqa: E402
from edge.features.vision_pre import normalize_faces  # noqa: E402
from edge.starter.vision_model import (  # noqa: E402
    FER_TEMPLATE_48, GREY_MEAN, GREY_STD, LUMA, TRAIN_SIZE, EncoderConfig, ExpressionHead, FaceExpressionEncoder,
    count_parameters, fer_template, grey_reference,
)

ROOT = Path(__file__).resolve().parents[1]
#: A narrow encoder of the real architecture, for fast tests.
TINY = EncoderConfig(widths=(8, 16, 16, 32), layers=(1, 1, 1, 1), stem_stride=2)


@pytest.fixture(autouse=True)
def one_thread():
    """Run on one torch thread: on a machine busy with other jobs, two torch threads wait on each other
    (measured on the 2-core CI machine: 3.5 s against 0.07 s per training step of the tiny net)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _script():
    spec = importlib.util.spec_from_file_location("train_starter_vision", ROOT / "scripts" / "train_starter_vision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rgb(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_grey_conversion_matches_numpy_reference():
    rgb = _rgb(4, TRAIN_SIZE)
    faces = normalize_faces(rgb, size=TRAIN_SIZE)
    encoder = FaceExpressionEncoder(EncoderConfig()).eval()
    got = encoder.to_grey(torch.from_numpy(faces)).numpy()
    want = grey_reference(faces)
    assert got.shape == (4, 1, TRAIN_SIZE, TRAIN_SIZE)
    np.testing.assert_allclose(got, want, atol=2e-6)
    # ... and both equal BT.601 luminance of the uint8 pixels (what cv2's RGB2GRAY computes, before rounding)
    np.testing.assert_allclose(want[:, 0], rgb.astype(np.float64) @ LUMA.astype(np.float64) / 255.0, atol=1e-5)


def test_grey_faces_reach_the_trunk_as_in_training():
    """A grey FER face given as the run path's RGB input gives the training path's features exactly."""
    grey = np.random.default_rng(1).integers(0, 256, (3, TRAIN_SIZE, TRAIN_SIZE), dtype=np.uint8)
    encoder = FaceExpressionEncoder(TINY).eval()
    with torch.no_grad():
        run = encoder(torch.from_numpy(normalize_faces(np.repeat(grey[..., None], 3, -1), size=TRAIN_SIZE)))
        train = encoder.features_from_grey(torch.from_numpy(grey[:, None].astype(np.float32) / 255.0))
    np.testing.assert_allclose(run.numpy(), train.numpy(), atol=1e-4)


def test_larger_faces_are_resized_to_the_training_resolution():
    encoder = FaceExpressionEncoder(EncoderConfig(face_size=64)).eval()
    flat = np.full((2, 64, 64, 3), 128, np.uint8)
    grey = encoder.to_grey(torch.from_numpy(normalize_faces(flat, size=64)))
    assert grey.shape == (2, 1, TRAIN_SIZE, TRAIN_SIZE)
    np.testing.assert_allclose(grey.numpy(), 128 / 255.0, atol=1e-5)  # a flat face stays flat


def test_onnx_export_parity_of_random_encoder(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    size = 64  # exercises the in-graph resize as well
    torch.manual_seed(0)
    encoder = FaceExpressionEncoder(EncoderConfig(face_size=size)).eval()
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    report = export_onnx(encoder, [example], tmp_path / "encoder.onnx", input_names=["faces"],
                         output_names=["features"], dynamic_axes={"faces": {0: "batch"}, "features": {0: "batch"}},
                         name="resnet18")
    assert report.input_shapes == {"faces": ("batch", 3, size, size)}
    assert report.output_shapes == {"features": ("batch", encoder.dim)}
    assert report.max_abs_diff < 1e-4 and report.batches == (2, 5)
    # the run path's own preprocessing feeds it
    faces = normalize_faces(_rgb(3, size), size=size)
    session = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(["features"], {"faces": faces})
    with torch.no_grad():
        want = encoder(torch.from_numpy(faces)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_learns_planted_patterns():
    """A few optimisation steps separate seven classes, each a bright blob at its own place in noise."""
    rng = np.random.default_rng(0)
    n, k = 448, 7
    labels = np.arange(n) % k
    images = rng.normal(0.45, 0.12, (n, 1, TRAIN_SIZE, TRAIN_SIZE))
    yy, xx = np.mgrid[:TRAIN_SIZE, :TRAIN_SIZE]
    for c in range(k):
        cy = 24 + 14 * math.sin(2 * math.pi * c / k)
        cx = 24 + 14 * math.cos(2 * math.pi * c / k)
        images[labels == c, 0] += 0.35 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0 ** 2))
    x = torch.from_numpy(np.clip(images, 0, 1).astype(np.float32))
    y = torch.from_numpy(labels)
    torch.manual_seed(0)
    encoder, head = FaceExpressionEncoder(TINY), ExpressionHead(TINY.dim, k, dropout=0.0)
    opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-2)
    train, test = slice(0, 336), slice(336, n)
    with torch.no_grad():
        before = float(F.cross_entropy(head(encoder.features_from_grey(x[train])), y[train]))
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randint(0, 336, (64,), generator=gen)
        loss = F.cross_entropy(head(encoder.features_from_grey(x[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    encoder.eval(), head.eval()
    with torch.no_grad():
        accuracy = float((head(encoder.features_from_grey(x[test])).argmax(1) == y[test]).float().mean())
    assert float(loss.detach()) < before
    assert accuracy >= 0.9, accuracy


def test_real_fer_faces_give_finite_features(shared_data):
    path = shared_data / "fer2013" / "publictest.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with np.load(path) as d:
        grey = d["images"][:64]
    torch.manual_seed(0)
    encoder = FaceExpressionEncoder(EncoderConfig()).eval()
    faces = normalize_faces(np.repeat(grey[..., None], 3, axis=-1), size=TRAIN_SIZE)
    with torch.no_grad():
        features = encoder(torch.from_numpy(faces)).numpy()
    assert features.shape == (64, encoder.dim) == (64, 256)
    assert np.isfinite(features).all()
    assert features.std(axis=0).max() > 0  # different faces, different features
    # FER's grey statistics are what the encoder normalises with
    assert abs(grey.mean() / 255.0 - GREY_MEAN) < 0.05 and abs(grey.std() / 255.0 - GREY_STD) < 0.05


def test_fer_template_is_arcface_rescaled_about_the_eyes():
    arc = template(112)
    matrix = similarity_transform(arc, fer_template(112))
    np.testing.assert_allclose(matrix[:, :2] @ arc.T + matrix[:, 2:], fer_template(112).T, atol=0.05 * 112 / 48)
    eye_distance = np.linalg.norm(FER_TEMPLATE_48[1] - FER_TEMPLATE_48[0])
    assert eye_distance == pytest.approx(18.0, abs=0.01)


def test_augment_and_schedule():
    script = _script()
    x = torch.rand(16, 1, TRAIN_SIZE, TRAIN_SIZE)
    out = script.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, x)
    assert script.lr_at(0.0, 0.1) == pytest.approx(0.004)
    assert script.lr_at(script.WARMUP, 0.1) == pytest.approx(0.1)
    assert script.lr_at(1.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    tr, va = script.split_validation(np.arange(1000) % 7, 0.1, seed=0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 1000 and abs(len(va) - 100) <= 7


def test_default_encoder_is_small_and_ends_at_3x3():
    encoder = FaceExpressionEncoder(EncoderConfig()).eval()
    assert encoder.dim == 256
    assert count_parameters(encoder) < 1_500_000
    with torch.no_grad():
        x = torch.rand(1, 1, TRAIN_SIZE, TRAIN_SIZE)
        trunk = encoder.stages(F.relu(encoder.bn1(encoder.conv1(x))))
    assert trunk.shape == (1, 256, 3, 3)


def test_trained_checkpoint_round_trip(tmp_path):
    from edge.model.checkpoint import save_checkpoint
    from edge.starter.vision_model import load_trained

    torch.manual_seed(0)
    encoder, head = FaceExpressionEncoder(TINY).eval(), ExpressionHead(TINY.dim).eval()
    state = {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()},
             **{f"head.{k}": v for k, v in head.state_dict().items()}}
    path = save_checkpoint(tmp_path / "best.safetensors", state, {**TINY.to_dict(), "num_classes": 7},
                           variant="starter-vision")
    loaded, loaded_head = load_trained(str(path), face_size=64)
    assert loaded.config.face_size == 64 and loaded.config.widths == TINY.widths
    grey = torch.rand(2, 1, TRAIN_SIZE, TRAIN_SIZE)
    with torch.no_grad():
        np.testing.assert_allclose(loaded_head(loaded.features_from_grey(grey)).numpy(),
                                   head(encoder.features_from_grey(grey)).numpy(), atol=1e-6)
