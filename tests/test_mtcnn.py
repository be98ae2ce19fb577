"""MTCNN: weight discovery, ONNX export parity, NMS by hand, and detection on real CREMA-D frames.

The tests that need the real P/R/O-Net weights skip, saying how to get them, where facenet-pytorch
is not installed (``pip install --no-deps facenet-pytorch==2.6.0``; CI installs it).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

from edge.errors import InputError
from edge.features.align import align_face, template
from edge.features.mtcnn import (
    OUTPUT_NAMES,
    FaceDetector,
    OnnxNet,
    detector_from_onnx,
    nms,
    pyramid_scales,
)

try:
    import torch

    from edge.features.mtcnn_export import PARITY_ATOL, export_mtcnn
    from edge.features.mtcnn_nets import INSTALL_HINT, find_mtcnn_weights, load_mtcnn_nets
except ImportError:  # the run path alone: only the numpy pieces are tested
    torch = None
try:
    import cv2
except ImportError:
    cv2 = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch (pip install 'lfmim-edge[train]')")
needs_cv2 = pytest.mark.skipif(cv2 is None, reason="needs OpenCV (pip install opencv-python-headless)")

FRAMES_PER_CLIP = 20
MIN_DETECTION_RATE = 0.95


@pytest.fixture(scope="module")
def weights_dir() -> Path:
    if torch is None or cv2 is None:
        pytest.skip("needs torch and OpenCV")
    try:
        return find_mtcnn_weights(None)
    except InputError:
        pytest.skip(f"MTCNN weights not found; get them with: {INSTALL_HINT}")


@pytest.fixture(scope="module")
def onnx_dir(weights_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mtcnn")
    paths = export_mtcnn(weights_dir, out)
    assert sorted(paths) == ["onet", "pnet", "rnet"]
    return out


@pytest.fixture(scope="module")
def detector(onnx_dir) -> FaceDetector:
    return detector_from_onnx(onnx_dir, intra_op_num_threads=1)


def _clip_frames(path: Path, count: int) -> list[np.ndarray]:
    """``count`` evenly spaced RGB frames of a clip, decoded in order."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr)
    cap.release()
    if not frames:
        pytest.fail(f"could not decode any frame of {path}")
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB) for i in picks]


# -- weights --------------------------------------------------------------------------------------------
@needs_torch
def test_missing_weights_dir_names_the_install_command(tmp_path):
    with pytest.raises(InputError, match=r"does not exist.*pip install --no-deps facenet-pytorch==2\.6\.0"):
        find_mtcnn_weights(tmp_path / "nowhere")


@needs_torch
def test_incomplete_weights_dir_names_the_missing_files(tmp_path):
    (tmp_path / "pnet.pt").write_bytes(b"")
    with pytest.raises(InputError, match=r"lacks rnet\.pt, onet\.pt.*pnet\.pt, rnet\.pt and onet\.pt"):
        find_mtcnn_weights(tmp_path)


@needs_torch
def test_no_installed_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "facenet_pytorch" else real(name, *a)
    )
    with pytest.raises(InputError, match=r"facenet-pytorch is not installed.*pip install --no-deps facenet-pytorch"):
        find_mtcnn_weights(None)


@needs_torch
def test_corrupt_weight_file_is_a_clear_error(tmp_path):
    for name in ("pnet.pt", "rnet.pt", "onet.pt"):
        (tmp_path / name).write_bytes(b"not a state dict")
    with pytest.raises(InputError, match=r"cannot read MTCNN weights .*pnet\.pt"):
        load_mtcnn_nets(tmp_path)


# -- export parity -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, shape",
    [
        ("pnet", (1, 3, 60, 80)),
        ("pnet", (2, 3, 131, 97)),
        ("rnet", (7, 3, 24, 24)),
        ("onet", (3, 3, 48, 48)),
    ],
)
def test_onnx_matches_torch(weights_dir, onnx_dir, name, shape):
    net = load_mtcnn_nets(weights_dir)[name]
    x = ((np.random.default_rng(1).integers(0, 256, size=shape) - 127.5) / 128).astype(np.float32)
    with torch.no_grad():
        expected = [t.numpy() for t in net(torch.from_numpy(x))]
    got = OnnxNet(onnx_dir / f"{name}.onnx")({"image": x})
    assert list(got) == list(OUTPUT_NAMES[name])
    for e, g in zip(expected, got.values()):
        assert e.shape == g.shape
        assert np.max(np.abs(e - g)) <= PARITY_ATOL
    if name == "pnet":  # a cell every 2 pixels, 12-pixel window
        assert got["prob"].shape[2:] == (int(np.ceil((shape[2] - 2) / 2)) - 4, int(np.ceil((shape[3] - 2) / 2)) - 4)


def test_missing_onnx_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"pnet\.onnx.*does not exist; export it"):
        detector_from_onnx(tmp_path)
    with pytest.raises(InputError, match=r"files for rnet, onet not given"):
        detector_from_onnx({"pnet": tmp_path / "pnet.onnx"})


# -- pure numpy pieces -------------------------------------------------------------------------------------
def test_nms_by_hand():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 4, 4], [1, 0, 11, 10]], dtype=float)
    scores = np.array([0.9, 0.8, 0.95, 0.85])
    # union: C(2) kept; A(0) IoU with C = 16/100; D(3) IoU with A = 90/110 > 0.5 dropped; B(1) IoU with A = 50/150
    assert nms(boxes, scores, 0.5).tolist() == [2, 0, 1]
    # min: A's intersection with C is all of C (16/16), D's is 12/16: both dropped; B does not touch C
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [2, 1]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    with pytest.raises(InputError, match="NMS mode 'max'"):
        nms(boxes, scores, 0.5, mode="max")


def test_pyramid_scales():
    scales = pyramid_scales(360, 480, 40)
    assert scales[0] == pytest.approx(12 / 40)
    assert np.allclose(np.diff(np.log(scales)), np.log(0.709))
    assert 360 * scales[-1] >= 12 > 360 * scales[-1] * 0.709


def test_bad_arguments():
    with pytest.raises(InputError, match="min_face must be at least 12"):
        FaceDetector(None, None, None, min_face=5)
    with pytest.raises(InputError, match="thresholds must be three probabilities"):
        FaceDetector(None, None, None, thresholds=(0.6, 1.7, 0.7))


# -- detection -------------------------------------------------------------------------------------------
def test_no_face_in_grey_or_noise(detector):
    assert detector.detect(np.full((360, 480, 3), 128, np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, size=(360, 480, 3), dtype=np.uint8)
    assert detector.detect(noise) == []


def test_detect_rejects_non_rgb_uint8(detector):
    with pytest.raises(InputError, match=r"RGB uint8 image of shape \(H, W, 3\); got float32"):
        detector.detect(np.zeros((100, 100, 3), np.float32))
    with pytest.raises(InputError, match="got uint8 \\(100, 100\\)"):
        detector.detect(np.zeros((100, 100), np.uint8))


@pytest.mark.data
def test_faces_found_in_real_frames(detector, shared_data):
    clips = sorted((shared_data / "crema-d-samples").glob("*.mp4"))
    if not clips:
        pytest.skip(f"no CREMA-D clips in {shared_data / 'crema-d-samples'}")
    found = total = 0
    for clip in clips:
        hits = 0
        for rgb in _clip_frames(clip, FRAMES_PER_CLIP):
            faces = detector.detect(rgb)
            if not faces:
                continue
            hits += 1
            assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
            face = faces[0]
            x1, y1, x2, y2 = face.box
            h, w = rgb.shape[:2]
            assert 0.15 * h < y2 - y1 < 0.9 * h and 0.5 < (x2 - x1) / (y2 - y1) < 1.5, (clip.name, face.box)
            marks = face.landmarks
            assert marks.shape == (5, 2)
            assert np.all((marks[:, 0] >= x1) & (marks[:, 0] <= x2) & (marks[:, 1] >= y1) & (marks[:, 1] <= y2))
            eyes_y, mouth_y = marks[:2, 1].max(), marks[3:, 1].min()
            assert eyes_y < marks[2, 1] < mouth_y, marks  # eyes above nose above mouth
            assert marks[0, 0] < marks[1, 0] and marks[3, 0] < marks[4, 0]  # left before right
        rate = hits / FRAMES_PER_CLIP
        print(f"{clip.name}: face in {hits}/{FRAMES_PER_CLIP} frames")
        assert rate >= MIN_DETECTION_RATE, f"{clip.name}: face in only {hits}/{FRAMES_PER_CLIP} frames"
        found += hits
        total += FRAMES_PER_CLIP
    print(f"CREMA-D detection rate: {found}/{total} = {found / total:.1%}")


@pytest.mark.data
def test_aligned_face_puts_landmarks_on_the_template(detector, shared_data):
    clip = sorted((shared_data / "crema-d-samples").glob("*.mp4"))[0]
    rgb = _clip_frames(clip, 3)[1]
    face = detector.detect(rgb)[0]
    aligned = align_face(rgb, face.landmarks)
    assert aligned.shape == (224, 224, 3) and aligned.dtype == np.uint8
    again = FaceDetector(*detector.nets.values(), min_face=60).detect(aligned)
    assert again, "no face found in the aligned crop"
    # The detector's landmarks are approximate; on the aligned face they land within a few pixels of the template.
    assert np.max(np.abs(again[0].landmarks - template(224))) < 12


def test_runner_with_infer_method_and_sequence_outputs(onnx_dir, shared_data):
    """Any object with ``infer(feeds)`` returning outputs in order plugs in (the Runner contract)."""

    class ListRunner:
        def __init__(self, path):
            self.net = OnnxNet(path)

        def infer(self, feeds):
            return list(self.net(feeds).values())

    nets = [ListRunner(onnx_dir / f"{n}.onnx") for n in ("pnet", "rnet", "onet")]
    clip = sorted((shared_data / "crema-d-samples").glob("*.mp4"))[0]
    rgb = _clip_frames(clip, 1)[0]
    by_list = FaceDetector(*nets).detect(rgb)
    by_dict = detector_from_onnx({n: onnx_dir / f"{n}.onnx" for n in OUTPUT_NAMES}).detect(rgb)
    assert len(by_list) == len(by_dict) >= 1
    assert np.allclose(by_list[0].box, by_dict[0].box) and np.allclose(by_list[0].landmarks, by_dict[0].landmarks)


def test_time_one_detection(detector, shared_data):
    clip = sorted((shared_data / "crema-d-samples").glob("*.mp4"))[0]
    rgb = cv2.resize(_clip_frames(clip, 1)[0], (480, 360))
    detector.detect(rgb)  # warm-up
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        detector.detect(rgb)
        runs.append(time.perf_counter() - start)
    print(
        f"MTCNN on 480x360, ONNX Runtime CPU, 1 thread: "
        f"min {min(runs) * 1e3:.1f} ms, median {np.median(runs) * 1e3:.1f} ms"
    )


def test_run_path_modules_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, edge.features.mtcnn, edge.features.align; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
