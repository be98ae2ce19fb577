"""Vision preprocessing in plain numpy (run path; never imports torch).

Faces arrive as MTCNN-aligned 224 x 224 RGB crops (uint8, height x width x channel).  They are scaled to [0, 1],
normalised with the ImageNet statistics that torchvision's ResNet18 (and its RAF-DB fine-tunes) were trained with,
and laid out channel-first for the network.  :func:`sample_frames` picks the paper's 64 frames of an utterance.
"""

from __future__ import annotations

import numpy as np

from edge.errors import InputError

#: Side of a face crop in pixels (the paper's MTCNN alignment output).
FACE_SIZE = 224
#: ImageNet per-channel mean and standard deviation (R, G, B) of pixel values scaled to [0, 1].
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
#: The paper's frame sampling: 8 even segments per utterance, 8 frames from each = 64 frames.
SEGMENTS = 8
PER_SEGMENT = 8


def normalize_faces(faces: np.ndarray, *, size: int = FACE_SIZE) -> np.ndarray:
    """uint8 RGB faces (N, size, size, 3) or one face (size, size, 3) -> float32 (N, 3, size, size), ImageNet-normalised."""
    faces = np.asarray(faces)
    if faces.dtype != np.uint8:
        raise InputError(f"faces must be uint8 RGB pixels (0-255), got dtype {faces.dtype}; convert with .astype(np.uint8)")
    if faces.ndim == 3:
        faces = faces[None]
    if faces.ndim != 4 or faces.shape[1:] != (size, size, 3):
        raise InputError(
            f"faces must have shape (N, {size}, {size}, 3) or ({size}, {size}, 3) (RGB, channel last), "
            f"got {faces.shape}; align and crop each face to {size} x {size} first"
        )
    x = faces.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def sample_frames(
    num_frames_available: int,
    segments: int = SEGMENTS,
    per_segment: int = PER_SEGMENT,
    *,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Indices (segments * per_segment,) int64, sorted, of the frames that represent one utterance.

    The clip is split into ``segments`` equal parts; from each part ``per_segment`` frames are taken: uniformly at
    random when ``rng`` is given (the paper's training-time rule), evenly spaced (the centre of each sub-interval)
    when ``rng`` is None, so deployment and evaluation are deterministic.  A clip shorter than the number of
    indices repeats frames.
    """
    n = int(num_frames_available)
    if n < 1:
        raise InputError(f"a clip needs at least one frame to sample from, got {num_frames_available}")
    if segments < 1 or per_segment < 1:
        raise InputError(f"segments and per_segment must be positive, got {segments} and {per_segment}")
    width = n / segments
    starts = np.arange(segments, dtype=np.float64)[:, None] * width
    if rng is None:
        offsets = (np.arange(per_segment, dtype=np.float64) + 0.5) / per_segment
        offsets = np.broadcast_to(offsets, (segments, per_segment))
    else:
        offsets = np.sort(rng.random((segments, per_segment)), axis=1)
    positions = starts + offsets * width
    return np.minimum(np.floor(positions).astype(np.int64), n - 1).reshape(-1)
