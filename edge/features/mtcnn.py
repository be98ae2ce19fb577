"""MTCNN face detection in plain numpy around three networks (run path: no torch).

The cascade of Zhang et al. (2016), as the paper's vision path uses it (MTCNN-aligned faces):

1. an image pyramid (smallest face ``min_face`` pixels, each level :data:`PYRAMID_FACTOR` of the last);
   P-Net scores every 12 x 12 window at stride 2 on each level; windows above ``thresholds[0]`` become
   boxes, are thinned by NMS per level and over all levels, moved by P-Net's box regression and squared;
2. R-Net re-scores 24 x 24 crops of those boxes, then NMS, box regression, squaring;
3. O-Net re-scores 48 x 48 crops, regresses the box and gives five landmarks; a final NMS in "min" mode.

Conventions: images are RGB ``uint8`` (H, W, 3); boxes are continuous pixel coordinates
``(x1, y1, x2, y2)`` with width ``x2 - x1``; the networks take ``(N, 3, H, W)`` float32 normalised as
``(x - 127.5) / 128`` (what facenet-pytorch's converted weights expect, see :mod:`edge.features.mtcnn_nets`).
Crops that reach past the image border are zero padded, as in the original MTCNN.

The networks are any callables ``infer(feeds) -> outputs`` (or objects with such an ``infer`` method):
``feeds`` is ``{"image": array}``, the outputs a mapping by the names in :data:`OUTPUT_NAMES` or a sequence
in that order, so an ONNX Runtime or a TensorRT runner plugs in. :func:`detector_from_onnx` builds one on
ONNX Runtime.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge._lazy import lazy_import
from edge.errors import InputError

log = logging.getLogger("edge")

#: the networks' input name and output names (the ONNX graphs use the same)
INPUT_NAME = "image"
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "pnet": ("reg", "prob"),
    "rnet": ("reg", "prob"),
    "onet": ("reg", "landmarks", "prob"),
}
#: side in pixels of the square crops R-Net and O-Net take
NET_INPUT_SIZE = {"rnet": 24, "onet": 48}
#: P-Net's window (pixels) and stride (pixels) on each pyramid level
PNET_CELL = 12
PNET_STRIDE = 2
#: ratio between successive pyramid levels (about 1 / sqrt(2))
PYRAMID_FACTOR = 0.709
#: NMS overlap thresholds: per pyramid level, across levels, after R-Net, after O-Net ("min" mode)
NMS_PNET_LEVEL = 0.5
NMS_PNET_ALL = 0.7
NMS_RNET = 0.7
NMS_ONET = 0.7
#: pixel normalisation of the networks' inputs
PIXEL_MEAN = 127.5
PIXEL_SCALE = 1.0 / 128.0

Net = Callable[[dict[str, np.ndarray]], Any]


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    ``box`` is ``(x1, y1, x2, y2)`` in pixels, clipped to the image; ``score`` O-Net's face probability;
    ``landmarks`` (5, 2) float32 ``(x, y)`` of left eye, right eye, nose, left and right mouth corner
    (left and right as seen in the image).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray


def normalize(images: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` or ``(H, W, 3)`` uint8 RGB -> ``(N, 3, H, W)`` float32 as the networks expect."""
    if images.ndim == 3:
        images = images[None]
    x = (images.astype(np.float32) - PIXEL_MEAN) * PIXEL_SCALE
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns the kept indices, highest score first.

    A box is dropped when its overlap with a kept, higher-scoring box exceeds ``threshold``; overlap is
    intersection over union (``mode="union"``) or intersection over the smaller area (``mode="min"``).
    Areas are ``(x2 - x1) * (y2 - y1)`` (continuous coordinates).
    """
    if mode not in ("union", "min"):
        raise InputError(f"NMS mode {mode!r} is not one of 'union', 'min'")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    x1, y1, x2, y2 = boxes.T
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        if mode == "min":
            denom = np.minimum(area[i], area[rest])
        else:
            denom = area[i] + area[rest] - inter
        overlap = np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def pyramid_scales(height: int, width: int, min_face: float, factor: float = PYRAMID_FACTOR) -> list[float]:
    """Scales at which a face of ``min_face`` pixels (and every larger one) fills P-Net's 12-pixel window."""
    scale = PNET_CELL / min_face
    side = min(height, width) * scale
    scales = []
    while side >= PNET_CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move each box's corners by ``offsets`` (N, 4) given in units of the box's width and height."""
    out = boxes.astype(np.float64).copy()
    wh = np.stack([out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]], axis=1)
    out[:, :4] += offsets[:, :4] * np.concatenate([wh, wh], axis=1)
    return out


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (side = the longer side)."""
    out = boxes.astype(np.float64).copy()
    w, h = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    side = np.maximum(w, h)
    out[:, 0] += (w - side) / 2
    out[:, 1] += (h - side) / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def crop_square(rgb: np.ndarray, box: Sequence[int], size: int) -> np.ndarray:
    """Crop integer box ``(x1, y1, x2, y2)`` (zero padded past the border) and resize it to ``size`` x ``size``."""
    cv2 = lazy_import("cv2", purpose="face cropping")
    x1, y1, x2, y2 = (int(v) for v in box)
    h, w = rgb.shape[:2]
    canvas = np.zeros((y2 - y1, x2 - x1, 3), dtype=rgb.dtype)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if sx2 > sx1 and sy2 > sy1:
        canvas[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = rgb[sy1:sy2, sx1:sx2]
    shrink = canvas.shape[0] > size or canvas.shape[1] > size
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _outputs(net: Any, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run one network and return its outputs by name, whatever form the runner gives them in."""
    infer = net.infer if hasattr(net, "infer") else net
    out = infer({INPUT_NAME: x})
    names = OUTPUT_NAMES[name]
    if isinstance(out, Mapping):
        missing = [n for n in names if n not in out]
        if missing:
            raise InputError(f"{name} returned outputs {sorted(out)}; expected {list(names)}")
        return {n: np.asarray(out[n]) for n in names}
    if isinstance(out, Sequence) and len(out) == len(names):
        return {n: np.asarray(o) for n, o in zip(names, out)}
    raise InputError(f"{name} must return a mapping or a sequence of {len(names)} arrays {list(names)}")


class FaceDetector:
    """MTCNN's three-stage cascade around any three network callables (stateless; safe to share).

    ``min_face`` is the smallest face side in pixels searched for (smaller is slower); ``thresholds``
    the face-probability cut of P-Net, R-Net and O-Net; ``factor`` the pyramid ratio.
    """

    def __init__(
        self,
        pnet: Net,
        rnet: Net,
        onet: Net,
        *,
        min_face: float = 40,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = PYRAMID_FACTOR,
    ) -> None:
        if not min_face >= PNET_CELL:
            raise InputError(f"min_face must be at least {PNET_CELL} pixels, got {min_face}")
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise InputError(f"thresholds must be three probabilities in [0, 1], got {thresholds}")
        if not 0.0 < factor < 1.0:
            raise InputError(f"the pyramid factor must lie in (0, 1), got {factor}")
        self.nets = {"pnet": pnet, "rnet": rnet, "onet": onet}
        self.min_face = float(min_face)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in one RGB uint8 (H, W, 3) image, highest score first (an empty list when none)."""
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise InputError(f"detect() takes an RGB uint8 image of shape (H, W, 3); got {got}")
        boxes = self._propose(rgb)
        if len(boxes):
            boxes = self._refine(rgb, boxes)
        if not len(boxes):
            return []
        boxes, points = self._output(rgb, boxes)
        h, w = rgb.shape[:2]
        faces = []
        for b, p in zip(boxes, points):
            box = (float(np.clip(b[0], 0, w)), float(np.clip(b[1], 0, h)),
                   float(np.clip(b[2], 0, w)), float(np.clip(b[3], 0, h)))
            faces.append(Face(box=box, score=float(b[4]), landmarks=p.astype(np.float32)))
        return faces

    # -- stage 1: P-Net over the pyramid ------------------------------------------------------------
    def _propose(self, rgb: np.ndarray) -> np.ndarray:
        cv2 = lazy_import("cv2", purpose="MTCNN face detection")
        h, w = rgb.shape[:2]
        found = []
        for scale in pyramid_scales(h, w, self.min_face, self.factor):
            hs, ws = max(int(math.ceil(h * scale)), PNET_CELL), max(int(math.ceil(w * scale)), PNET_CELL)
            level = cv2.resize(rgb, (ws, hs), interpolation=cv2.INTER_AREA)
            out = _outputs(self.nets["pnet"], "pnet", normalize(level))
            boxes = self._windows(out["prob"][0, 1], out["reg"][0], ws / w, hs / h)
            if len(boxes):
                found.append(boxes[nms(boxes[:, :4], boxes[:, 4], NMS_PNET_LEVEL)])
        if not found:
            return np.zeros((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], NMS_PNET_ALL)]
        return square(regress(boxes[:, :5], boxes[:, 5:9]))

    def _windows(self, prob: np.ndarray, reg: np.ndarray, sx: float, sy: float) -> np.ndarray:
        """P-Net cells above threshold -> rows ``x1, y1, x2, y2, score, dx1, dy1, dx2, dy2`` in image pixels."""
        rows, cols = np.nonzero(prob >= self.thresholds[0])
        x1, y1 = cols * PNET_STRIDE / sx, rows * PNET_STRIDE / sy
        x2, y2 = (cols * PNET_STRIDE + PNET_CELL) / sx, (rows * PNET_STRIDE + PNET_CELL) / sy
        return np.column_stack([x1, y1, x2, y2, prob[rows, cols], reg[:, rows, cols].T]).astype(np.float64)

    # -- stages 2 and 3: crops through R-Net and O-Net ----------------------------------------------
    def _crops(self, rgb: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Integer square boxes (N, 4) and their normalised crops (N, 3, size, size); tiny boxes dropped."""
        x1, y1 = np.round(boxes[:, 0]), np.round(boxes[:, 1])
        side = np.round(boxes[:, 2] - boxes[:, 0])
        ints = np.stack([x1, y1, x1 + side, y1 + side], axis=1).astype(np.int64)
        ints = ints[side >= 1]
        crops = np.stack([crop_square(rgb, b, size) for b in ints]) if len(ints) else np.zeros((0, size, size, 3))
        return ints, normalize(crops.astype(np.uint8))

    def _refine(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        ints, x = self._crops(rgb, boxes, NET_INPUT_SIZE["rnet"])
        if not len(ints):
            return np.zeros((0, 5))
        out = _outputs(self.nets["rnet"], "rnet", x)
        score = out["prob"][:, 1]
        ok = score > self.thresholds[1]
        boxes = np.column_stack([ints[ok], score[ok]]).astype(np.float64)
        keep = nms(boxes[:, :4], boxes[:, 4], NMS_RNET)
        return square(regress(boxes[keep], out["reg"][ok][keep]))

    def _output(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ints, x = self._crops(rgb, boxes, NET_INPUT_SIZE["onet"])
        if not len(ints):
            return np.zeros((0, 5)), np.zeros((0, 5, 2))
        out = _outputs(self.nets["onet"], "onet", x)
        score = out["prob"][:, 1]
        ok = score > self.thresholds[2]
        boxes = np.column_stack([ints[ok], score[ok]]).astype(np.float64)
        marks = out["landmarks"][ok].astype(np.float64)
        side = (boxes[:, 2] - boxes[:, 0])[:, None]
        points = np.stack([boxes[:, :1] + marks[:, :5] * side, boxes[:, 1:2] + marks[:, 5:] * side], axis=2)
        boxes = regress(boxes, out["reg"][ok])
        keep = nms(boxes[:, :4], boxes[:, 4], NMS_ONET, mode="min")
        return boxes[keep], points[keep]


class OnnxNet:
    """One MTCNN network on ONNX Runtime (CPU): ``net({"image": x}) -> {name: array}``."""

    def __init__(self, path: str | Path, *, intra_op_num_threads: int = 1) -> None:
        ort = lazy_import("onnxruntime", purpose="MTCNN on ONNX Runtime")
        path = Path(path)
        if not path.is_file():
            raise InputError(f"MTCNN ONNX file {str(path)!r} does not exist; export it with edge.features.mtcnn_export")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_num_threads)
        options.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, feeds)))


def detector_from_onnx(
    onnx: str | Path | Mapping[str, str | Path], *, intra_op_num_threads: int = 1, **options: Any
) -> FaceDetector:
    """A :class:`FaceDetector` on ONNX Runtime (CPU) from the three exported networks.

    ``onnx`` is a folder holding ``pnet.onnx``, ``rnet.onnx`` and ``onet.onnx``, or a mapping name -> file
    (what :func:`edge.features.mtcnn_export.export_mtcnn` returns). ``options`` go to :class:`FaceDetector`
    (``min_face``, ``thresholds``, ``factor``).
    """
    if isinstance(onnx, Mapping):
        missing = [name for name in OUTPUT_NAMES if name not in onnx]
        if missing:
            raise InputError(f"MTCNN ONNX files for {', '.join(missing)} not given; expected keys {list(OUTPUT_NAMES)}")
        paths = {name: Path(onnx[name]) for name in OUTPUT_NAMES}
    else:
        paths = {name: Path(onnx) / f"{name}.onnx" for name in OUTPUT_NAMES}
    nets = {name: OnnxNet(path, intra_op_num_threads=intra_op_num_threads) for name, path in paths.items()}
    return FaceDetector(nets["pnet"], nets["rnet"], nets["onet"], **options)
