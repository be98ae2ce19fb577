"""Benchmark inputs of the right shapes and value ranges for each network of a build.

Dimension 0 is the batch. The only other dynamic dimensions are P-Net's height and width: P-Net runs on every level
of MTCNN's image pyramid, and the benchmark times its largest (first) level for a 480 x 360 frame, i.e. the frame
scaled by 12 / ``min_face`` (108 x 144 pixels for the paper's ``min_face`` of 40). Token ids are drawn inside the
tokenizer's vocabulary (all tokens attended), images in the detector's normalised range, everything else N(0, 1).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from edge.errors import InputError
from edge.features.mtcnn import PNET_CELL, pyramid_scales
from edge.runtime.base import TensorSpec

#: the frame whose first pyramid level P-Net is timed on (width, height)
PNET_FRAME = (480, 360)
#: token ids below this are special tokens ([PAD], [UNK], [CLS], [SEP], [MASK] in BERT vocabularies)
FIRST_PLAIN_TOKEN = 5


def pnet_size(min_face: float, frame: tuple[int, int] = PNET_FRAME) -> tuple[int, int]:
    """(height, width) of the first pyramid level of a ``frame`` (width, height), as the detector computes it."""
    width, height = frame
    scale = pyramid_scales(height, width, min_face)[0]
    return max(math.ceil(height * scale), PNET_CELL), max(math.ceil(width * scale), PNET_CELL)


def vocab_size(build_dir: Path, manifest: dict) -> int | None:
    """Vocabulary size of the build's tokenizer (``tokenizer/tokenizer.json``), None when there is none."""
    path = build_dir / manifest.get("tokenizer", "tokenizer") / "tokenizer.json"
    try:
        model = json.loads(path.read_text(encoding="utf-8")).get("model", {})
    except (OSError, json.JSONDecodeError):
        return None
    vocab = model.get("vocab")
    return len(vocab) if vocab else None


def fixed_batch(specs: Sequence[TensorSpec]) -> int | None:
    """The batch size a network's inputs are fixed to, or None when the batch is dynamic."""
    for spec in specs:
        if spec.rank and isinstance(spec.shape[0], int):
            return spec.shape[0]
    return None


def input_shape(network: str, spec: TensorSpec, batch: int, *, min_face: float) -> tuple[int, ...]:
    """The concrete shape benchmarked for ``spec`` at ``batch``."""
    shape = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int):
            shape.append(dim if axis else batch)
        elif axis == 0:
            shape.append(batch)
        elif network == "pnet" and axis in (2, 3):
            shape.append(pnet_size(min_face)[axis - 2])
        else:
            raise InputError(f"{network}: input {spec} has a dynamic dimension {axis} the benchmark has no "
                             "representative size for; export it with that dimension fixed")
    return tuple(shape)


def make_feeds(network: str, specs: Sequence[TensorSpec], batch: int, *, min_face: float = 40.0,
               vocab: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """One batch of inputs for ``network``, by input name."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = input_shape(network, spec, batch, min_face=min_face)
        if spec.name == "input_ids":
            top = vocab if vocab and vocab > FIRST_PLAIN_TOKEN else 100
            feeds[spec.name] = rng.integers(FIRST_PLAIN_TOKEN, top, size=shape).astype(spec.dtype)
        elif spec.name == "attention_mask":
            feeds[spec.name] = np.ones(shape, dtype=spec.dtype)
        elif spec.dtype.kind in "iub":
            feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
        elif network in ("pnet", "rnet", "onet"):  # normalised pixels: (uint8 - 127.5) / 128
            feeds[spec.name] = ((rng.integers(0, 256, size=shape) - 127.5) / 128.0).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds
