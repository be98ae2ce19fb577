"""Face alignment from MTCNN's five landmarks to a fixed template (numpy; cv2 imported lazily).

The paper feeds ResNet18 with MTCNN-aligned 224 x 224 faces. We map the five landmarks (left eye,
right eye, nose, left and right mouth corner, left/right as seen in the image) onto the standard
ArcFace / InsightFace 5-point template for 112 x 112 crops, scaled by ``size / 112`` (so 2x for 224),
with the least-squares similarity transform (rotation, uniform scale, translation; Umeyama 1991).
Where no landmarks are available, :func:`crop_face` cuts a square around the box with a margin.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.features.mtcnn import crop_square

#: output side in pixels (the paper's aligned faces)
FACE_SIZE = 224
#: ArcFace's 5-point template (x, y) in a 112 x 112 crop: eyes, nose tip, mouth corners
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
#: Five-point template (x, y) in a 48 x 48 crop that matches FER2013's looser framing (the starter face encoder's
#: training data): ArcFace's template scaled about its eye midpoint so that the eyes land where FER2013's mean
#: training face has them (darkest points (15, 17) and (33, 17): eye distance 18 px = 0.375 of the side); the mouth
#: corners then fall where the mean face's mouth is.  ArcFace's own template at 48 px puts the eyes 5 px lower and
#: 15.1 px apart: its faces are about 16 % smaller than FER2013's.
FER_TEMPLATE_48 = np.array(
    [
        [15.00, 17.05],
        [33.00, 16.95],
        [24.06, 27.29],
        [16.66, 37.82],
        [31.57, 37.74],
    ],
    dtype=np.float64,
)
#: Templates by name (a profile's ``[vision] align``) and the crop side they are defined for.
TEMPLATES: dict[str, tuple[np.ndarray, int]] = {"arcface": (ARCFACE_TEMPLATE_112, 112), "fer": (FER_TEMPLATE_48, 48)}
#: margin added on every side of a detector box for the fallback crop, as a fraction of the box's longer side
CROP_MARGIN = 0.2


def template(size: int = FACE_SIZE, kind: str = "arcface") -> np.ndarray:
    """The five template points (5, 2) of template ``kind`` (:data:`TEMPLATES`) for a ``size`` x ``size`` crop."""
    try:
        points, side = TEMPLATES[kind]
    except KeyError:
        raise InputError(f"face template {kind!r} is unknown; expected one of {', '.join(TEMPLATES)}") from None
    return points * (size / float(side))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (2, 3) matrix ``M`` with ``dst ~ M @ [src, 1]`` (Umeyama, no reflection)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise InputError(f"need matching (N >= 2, 2) point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if not var_s > 1e-12:
        raise InputError("the landmarks coincide; no similarity transform maps them onto the template")
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    flip = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ flip @ vt
    scale = float(np.trace(np.diag(sigma) @ flip) / var_s)
    shift = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, shift[:, None]])


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise InputError(f"expected an RGB uint8 image of shape (H, W, 3); got {got}")


def align_face(
    rgb: np.ndarray,
    landmarks: np.ndarray | None,
    size: int = FACE_SIZE,
    *,
    box: Sequence[float] | None = None,
    kind: str = "arcface",
) -> np.ndarray:
    """The face warped so its five landmarks sit on template ``kind``: uint8 (size, size, 3).

    With ``landmarks=None`` the face is cut from ``box`` instead (:func:`crop_face`); one of the two is needed.
    Pixels from outside the image are black.
    """
    _check_rgb(rgb)
    if landmarks is None:
        if box is None:
            raise InputError("align_face needs five landmarks or, failing those, a face box")
        return crop_face(rgb, box, size)
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise InputError(f"landmarks must be five finite (x, y) points, shape (5, 2); got shape {points.shape}")
    cv2 = lazy_import("cv2", purpose="face alignment")
    matrix = similarity_transform(points, template(size, kind))
    return cv2.warpAffine(
        rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )


def crop_face(rgb: np.ndarray, box: Sequence[float], size: int = FACE_SIZE, margin: float = CROP_MARGIN) -> np.ndarray:
    """A square crop centred on ``box`` (x1, y1, x2, y2), grown by ``margin`` per side, resized to ``size``."""
    _check_rgb(rgb)
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1) or margin < 0:
        raise InputError(f"box must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1 and margin >= 0; got {box}, {margin}")
    side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)
    left, top = round((x1 + x2 - side) / 2.0), round((y1 + y2 - side) / 2.0)
    edge = max(int(round(side)), 1)
    return crop_square(rgb, (left, top, left + edge, top + edge), size)
