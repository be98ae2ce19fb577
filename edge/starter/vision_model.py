"""The starter profile's vision encoder: a small ResNet18-family face-expression network trained on FER2013
(build path; torch).

:class:`FaceExpressionEncoder` takes what the run path gives the face encoder -- ``faces`` float32 (B, 3, S, S),
ImageNet-normalised RGB at the profile's ``face_size`` S (:func:`edge.features.vision_pre.normalize_faces`) -- and
does the rest inside the graph, so the exported ONNX file needs no new preprocessing on the run path:

- undo the ImageNet normalisation (back to [0, 1] RGB) and take the luminance ``0.299 R + 0.587 G + 0.114 B``
  (ITU-R BT.601, the weights of ``cv2.cvtColor(..., COLOR_RGB2GRAY)`` and of PIL's ``convert("L")``), one channel;
- resize bilinearly to the training resolution (:data:`TRAIN_SIZE` = 48, FER2013's) when S differs;
- normalise with FER2013's grey mean and standard deviation (:data:`GREY_MEAN`, :data:`GREY_STD`);
- a ResNet-layout trunk of BasicBlocks (torchvision's block; 3x3 stem, four stages, global average pooling) sized
  for the CPU: by default widths 32-64-128-256, one block per stage (ResNet-10 layout, [1, 1, 1, 1]) and a
  stride-2 stem, so the stages run at 24 / 12 / 6 / 3 pixels -> ``features`` (B, 256).  ``layers=(2, 2, 2, 2)``
  gives the ResNet-18 layout (about twice the compute); ``stem_stride=1, first_stride=2`` lets the stem see the
  full 48 x 48 detail for a little more compute; ``stem_stride=1`` alone runs the stages at 48 / 24 / 12 / 6 (four
  times the compute).
  ResNet18's 7x7 stride-2 stem and max-pool are left out: they would leave a 48-pixel face at 2 x 2 before the
  last stage.

:class:`ExpressionHead` (dropout + linear, 7 classes) is for training and evaluation only; the run path reads the
encoder's features and LFMIM classifies them.

The network was trained on FER2013's loosely framed 48 x 48 crops.  :data:`edge.features.align.FER_TEMPLATE_48` gives the five-point
template (eyes, nose tip, mouth corners) that reproduces that framing (measured on FER2013's mean face), to be used
by the run path's alignment instead of ArcFace's template (whose faces are about 16 % smaller and sit lower) when
the starter profile is active.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edge.features.align import FER_TEMPLATE_48  # noqa: F401  (re-exported: the framing this encoder expects)
from edge.features.vision_pre import IMAGENET_MEAN, IMAGENET_STD

#: Encoder name in profiles.
ENCODER_NAME = "fer-resnet18s"
#: Side of FER2013's crops, the resolution the trunk is trained at, in pixels.
TRAIN_SIZE = 48
#: ITU-R BT.601 luminance weights (R, G, B).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: FER2013 train set grey level mean and standard deviation (pixel values scaled to [0, 1]).
GREY_MEAN = 0.5077
GREY_STD = 0.2551


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of :class:`FaceExpressionEncoder`; stored in checkpoints as JSON."""

    face_size: int = TRAIN_SIZE  # S of the run path's faces (the exported input)
    train_size: int = TRAIN_SIZE  # resolution the trunk runs at
    widths: tuple[int, ...] = (32, 64, 128, 256)
    layers: tuple[int, ...] = (1, 1, 1, 1)  # BasicBlocks per stage; (2, 2, 2, 2) is ResNet-18's
    stem_stride: int = 2  # stride of the 3x3 stem
    first_stride: int = 1  # stride of the first stage (stem 2, first 1: stages at 24 / 12 / 6 / 3 px)

    @property
    def dim(self) -> int:
        return int(self.widths[-1])

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EncoderConfig":
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def fer_template(size: int = TRAIN_SIZE) -> np.ndarray:
    """The FER2013-framing five-point template (5, 2) for a ``size`` x ``size`` crop."""
    from edge.features.align import template

    return template(size, "fer")


def grey_reference(faces: np.ndarray) -> np.ndarray:
    """numpy reference of :meth:`FaceExpressionEncoder.to_grey` without the resize: ImageNet-normalised RGB
    (N, 3, S, S) -> grey in [0, 1] (N, 1, S, S), float64."""
    x = np.asarray(faces, dtype=np.float64)
    std = IMAGENET_STD.astype(np.float64)[None, :, None, None]
    rgb = x * std + IMAGENET_MEAN.astype(np.float64)[None, :, None, None]
    return np.tensordot(LUMA.astype(np.float64), rgb, axes=([0], [1]))[:, None]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (torchvision's ``BasicBlock`` layout)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class FaceExpressionEncoder(nn.Module):
    """ImageNet-normalised RGB faces (B, 3, S, S) -> ``features`` (B, dim); see the module docstring."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or EncoderConfig()
        if len(config.widths) != len(config.layers) or not config.widths:
            raise ValueError(f"widths {config.widths} and layers {config.layers} must have the same non-zero length")
        # (1, 3, 1, 1) constants: grey = sum_c w_c * (x_c * std_c + mean_c) = sum_c (w_c std_c) x_c + sum_c w_c mean_c
        self.register_buffer("luma_scale", torch.from_numpy(LUMA * IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.luma_shift = float(np.dot(LUMA.astype(np.float64), IMAGENET_MEAN.astype(np.float64)))
        w0 = config.widths[0]
        self.conv1 = nn.Conv2d(1, w0, 3, config.stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w0)
        cin = w0
        stages = []
        for i, (blocks, width) in enumerate(zip(config.layers, config.widths)):
            stride = config.first_stride if i == 0 else 2
            rest = [BasicBlock(width, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(BasicBlock(cin, width, stride), *rest))
            cin = width
        self.stages = nn.Sequential(*stages)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # No zero-init of the residual branches' last BN (Goyal et al. 2017): with one block per stage and a
        # projection shortcut in every stage it leaves the trunk a chain of strided 1x1 convolutions at the start,
        # and training sat at the majority class for several epochs (measured: 120 SGD steps at lr 0.05, batch 128,
        # no augmentation: 26 % train accuracy with zero-init, 36 % without).

    @property
    def dim(self) -> int:
        return self.config.dim

    def to_grey(self, faces: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised RGB (B, 3, S, S) -> grey in [0, 1] (B, 1, train_size, train_size)."""
        grey = (faces * self.luma_scale).sum(dim=1, keepdim=True) + self.luma_shift
        size = self.config.train_size
        if faces.shape[-1] != size or faces.shape[-2] != size:
            grey = F.interpolate(grey, size=(size, size), mode="bilinear", align_corners=False)
        return grey

    def features_from_grey(self, grey: torch.Tensor) -> torch.Tensor:
        """Grey faces in [0, 1] (B, 1, train_size, train_size) -> (B, dim); the training entry point."""
        x = (grey - GREY_MEAN) * (1.0 / GREY_STD)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stages(x)
        return x.mean(dim=(2, 3))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.features_from_grey(self.to_grey(faces))


class ExpressionHead(nn.Module):
    """Features (B, dim) -> logits (B, classes); training and evaluation only."""

    def __init__(self, dim: int, num_classes: int = 7, dropout: float = 0.3) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))


def count_parameters(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def load_trained(path: str, *, face_size: int | None = None) -> tuple[FaceExpressionEncoder, ExpressionHead]:
    """Encoder and head in eval mode from a ``best.safetensors`` written by ``scripts/train_starter_vision.py``
    (``encoder.*`` and ``head.*`` tensors, config in the metadata).  ``face_size`` overrides the exported input
    size S (the trunk's weights do not depend on it)."""
    from edge.model.checkpoint import load_checkpoint, load_state_into

    ckpt = load_checkpoint(path)
    config = EncoderConfig.from_dict(ckpt.config)
    if face_size is not None:
        config = EncoderConfig.from_dict({**config.to_dict(), "face_size": int(face_size)})
    encoder = FaceExpressionEncoder(config)
    head = ExpressionHead(config.dim, int(ckpt.config.get("num_classes", 7)))
    load_state_into(encoder, {k[len("encoder."):]: v for k, v in ckpt.state.items() if k.startswith("encoder.")},
                    source=f"{path} (encoder)")
    load_state_into(head, {k[len("head."):]: v for k, v in ckpt.state.items() if k.startswith("head.")},
                    source=f"{path} (head)")
    return encoder.eval(), head.eval()
