"""edge.build.face_ensemble: one face-encoder graph from several, with mirrored test-time augmentation, checked in
real ONNX Runtime sessions against its members run one by one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch to export the member encoders (pip install 'lfmim-edge[train]')")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from edge.build.export import export_onnx  # noqa: E402
from edge.build.face_ensemble import check_face_ensemble, compose_face_ensemble, reference_features  # noqa: E402
from edge.errors import InputError  # noqa: E402
from edge.features.vision_pre import normalize_faces  # noqa: E402
from edge.starter.vision_model import EncoderConfig, FaceExpressionEncoder  # noqa: E402


def _member(tmp: Path, name: str, seed: int, widths=(8, 16, 16, 32), face_size: int = 48, stem_stride: int = 2) -> Path:
    torch.manual_seed(seed)
    config = EncoderConfig(face_size=face_size, widths=widths, layers=(1,) * len(widths), stem_stride=stem_stride)
    encoder = FaceExpressionEncoder(config).eval()
    with torch.no_grad():  # random BN statistics, so the features differ member to member and are not symmetric
        for m in encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp / f"{name}.onnx"
    example = torch.randn(2, 3, face_size, face_size, generator=torch.Generator().manual_seed(seed))
    export_onnx(encoder, [example], path, input_names=["faces"], output_names=["features"],
                dynamic_axes={"faces": {0: "batch"}, "features": {0: "batch"}}, name="resnet18")
    return path


def _faces(n: int, size: int = 48, seed: int = 0) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return normalize_faces(rgb, size=size)


def _run(path: Path, faces: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(["features"], {"faces": faces})[0]


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("members")
    return [_member(tmp, "a", 1), _member(tmp, "b", 2, widths=(8, 16, 24), stem_stride=1)]


def test_composed_graph_equals_its_members_mirrored_and_concatenated(members, tmp_path):
    out = tmp_path / "ensemble.onnx"
    compose_face_ensemble(members, out)
    faces = _faces(5)
    got = _run(out, faces)
    assert got.shape == (5, 32 + 24)
    want = reference_features(members, faces)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the first block is member a's mean of the plain and mirrored faces, by hand
    a = _run(members[0], faces)
    a_mirror = _run(members[0], np.ascontiguousarray(faces[..., ::-1]))
    np.testing.assert_allclose(got[:, :32], 0.5 * (a + a_mirror), atol=1e-5)
    assert check_face_ensemble(out, members, _faces(3, seed=1)) < 1e-5
    # batch 1 and a larger batch give the same rows (the mirror halves are split by batch, not by position)
    np.testing.assert_allclose(_run(out, faces[:1]), got[:1], atol=1e-5)


def test_mirrored_ensemble_is_left_right_invariant_and_its_members_are_not(members, tmp_path):
    out = tmp_path / "e.onnx"
    compose_face_ensemble(members, out)
    faces = _faces(4, seed=3)
    mirrored = np.ascontiguousarray(faces[..., ::-1])
    member = _run(members[0], faces)
    assert np.abs(member - _run(members[0], mirrored)).max() > 1e-3  # premise: a member alone sees the flip
    np.testing.assert_allclose(_run(out, faces), _run(out, mirrored), atol=1e-5)


def test_without_mirror_it_is_the_plain_concatenation(members, tmp_path):
    out = tmp_path / "plain.onnx"
    compose_face_ensemble(members, out, mirror=False)
    faces = _faces(3, seed=4)
    want = np.concatenate([_run(m, faces) for m in members], axis=1)
    np.testing.assert_allclose(_run(out, faces), want, atol=1e-5)
    assert check_face_ensemble(out, members, faces, mirror=False) < 1e-5


def test_one_member_mirrored_keeps_its_width(members, tmp_path):
    out = tmp_path / "one.onnx"
    compose_face_ensemble(members[:1], out)
    faces = _faces(2, seed=5)
    assert _run(out, faces).shape == (2, 32)
    assert check_face_ensemble(out, members[:1], faces) < 1e-5


def test_bad_members_are_one_clear_error(members, tmp_path):
    with pytest.raises(InputError, match="not found"):
        compose_face_ensemble([tmp_path / "missing.onnx"])
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(InputError, match="junk.onnx.*not an ONNX model"):
        compose_face_ensemble([junk])
    other = _member(tmp_path, "big", 3, face_size=64)
    with pytest.raises(InputError, match="faces of side 64.*48"):
        compose_face_ensemble([members[0], other])
    # a network that is not a face encoder (its tensors are named otherwise)
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])])
    relu = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(relu))
    with pytest.raises(InputError, match="relu.onnx.*expected \\['faces'\\]"):
        compose_face_ensemble([relu])
    with pytest.raises(InputError, match="no face encoders"):
        compose_face_ensemble([])


def _script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "make_starter_face_ensemble.py"
    spec = importlib.util.spec_from_file_location("make_starter_face_ensemble", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_composes_and_checks_on_real_fer_faces(members, tmp_path, shared_data, capsys):
    import json

    fer = shared_data / "fer2013"
    if not (fer / "train.npz").is_file():
        pytest.skip(f"{fer / 'train.npz'} not found")
    script = _script()
    out = tmp_path / "ens" / "encoder.onnx"
    assert script.main([str(members[0]), str(members[1]), "--out", str(out), "--data", str(fer), "--no-probe"]) == 0
    summary = json.loads((out.parent / "summary.json").read_text())
    assert summary["dim"] == 56 and summary["mirror"] is True
    assert summary["parity_max_abs_diff_64_faces"] <= script.PARITY_ATOL
    assert _run(out, _faces(2)).shape == (2, 56)
    # a missing member: one line naming it, nothing written
    assert script.main([str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "x.onnx"), "--data", str(fer),
                        "--no-probe"]) == 2
    assert "nope.onnx not found" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
    assert script.main([str(members[0]), "--out", str(tmp_path / "y.onnx"), "--data", str(tmp_path)]) == 2
    assert "train.npz not found" in capsys.readouterr().err


def test_a_linear_probe_reads_planted_classes():
    script = _script()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 700)
    x = rng.normal(size=(700, 16)).astype(np.float32)
    x[np.arange(700), y] += 3.0  # class c lifts feature c
    assert script.probe_accuracy(x[:600], y[:600], x[600:], y[600:], epochs=300) > 0.8
    noise = rng.normal(size=(700, 16)).astype(np.float32)
    assert script.probe_accuracy(noise[:600], y[:600], noise[600:], y[600:], epochs=300) < 0.35
