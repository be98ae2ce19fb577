"""Face alignment: the similarity fit, landmarks onto the template on a synthetic image, the box fallback, errors."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import InputError
from edge.features.align import ARCFACE_TEMPLATE_112, align_face, crop_face, similarity_transform, template

pytest.importorskip("cv2")


def _similarity(scale: float, degrees: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([scale * rot, np.array(shift)[:, None]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _blob(shape: tuple[int, int], centre: np.ndarray, sigma: float = 2.5) -> np.ndarray:
    """An RGB uint8 image, black but for a white Gaussian spot at ``centre`` (x, y)."""
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    spot = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))
    return np.repeat((255 * spot).round().astype(np.uint8)[..., None], 3, axis=2)


def _centroid(image: np.ndarray) -> np.ndarray:
    weight = image[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    return np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()


def test_template_is_arcface_scaled_to_224():
    assert np.allclose(template(224), ARCFACE_TEMPLATE_112 * 2)
    assert template(224)[0, 0] < template(224)[1, 0] and template(224)[1, 1] < template(224)[3, 1]


def test_similarity_transform_recovers_a_known_similarity():
    known = _similarity(0.63, -17.0, (12.5, -40.0))
    src = np.array([[100.0, 120.0], [180.0, 118.0], [140.0, 160.0], [110.0, 200.0], [175.0, 199.0]])
    fitted = similarity_transform(src, _apply(known, src))
    assert np.allclose(fitted, known, atol=1e-9)


def test_landmarks_land_on_the_template_within_one_pixel():
    # A face placed in a 400 x 360 image by a known similarity (larger, rotated by 25 degrees, shifted).
    to_image = _similarity(1.4, 25.0, (90.0, 30.0))
    landmarks = _apply(to_image, template(224))
    for i, point in enumerate(landmarks):
        aligned = align_face(_blob((360, 400), point), landmarks)
        assert aligned.shape == (224, 224, 3) and aligned.dtype == np.uint8
        error = np.linalg.norm(_centroid(aligned) - template(224)[i])
        assert error < 1.0, f"landmark {i} lands {error:.2f} px from the template"


def test_fallback_crop_from_box_with_margin():
    image = np.zeros((300, 400, 3), np.uint8)
    image[100:200, 150:250] = 255  # the "face": a 100 x 100 white box
    crop = align_face(image, None, box=(150, 100, 250, 200))
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    # margin 0.2 per side: the box spans 100/140 of the crop, centred -> [32, 192) white, the rest black
    assert crop[112, 112].tolist() == [255, 255, 255]
    assert crop[40:184, 40:184].min() == 255 and crop[:25].max() == 0 and crop[:, 200:].max() == 0
    # past the image border: zero padded, still 224 x 224
    assert crop_face(image, (-50, -50, 50, 50)).shape == (224, 224, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"landmarks": None}, "needs five landmarks or, failing those, a face box"),
        ({"landmarks": np.zeros((4, 2))}, r"shape \(5, 2\); got shape \(4, 2\)"),
        ({"landmarks": np.full((5, 2), np.nan)}, "five finite"),
        ({"landmarks": np.ones((5, 2))}, "landmarks coincide"),
        ({"landmarks": None, "box": (10, 10, 5, 20)}, "x2 > x1"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(InputError, match=match):
        align_face(np.zeros((100, 100, 3), np.uint8), **kwargs)


def test_rejects_non_rgb_image():
    with pytest.raises(InputError, match=r"RGB uint8 image of shape \(H, W, 3\); got float64"):
        align_face(np.zeros((100, 100, 3)), template(224))
