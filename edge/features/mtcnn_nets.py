"""MTCNN's three networks (P-Net, R-Net, O-Net) in torch, for export only (build path).

The layer names match the state dicts that the PyPI package ``facenet-pytorch`` 2.6.0 (MIT) ships as
``facenet_pytorch/data/{pnet,rnet,onet}.pt``, so those files load with ``load_state_dict(strict=True)``.
Those weights were converted from the original MTCNN (Zhang et al., 2016) and expect:

* input ``(N, 3, H, W)`` float32, RGB, normalised as ``(x - 127.5) / 128``, rows = image height;
* the fully connected layers of R-Net and O-Net read the last conv map flattened in (W, H, C) order,
  which is why their forward passes permute to ``(N, W, H, C)`` before flattening.

Outputs (names used in the ONNX graphs, see :mod:`edge.features.mtcnn`):

* P-Net: ``reg`` (N, 4, H', W') box offsets, ``prob`` (N, 2, H', W') softmax (index 1 = face);
  H' = ceil((H - 2) / 2) - 4, a cell every 2 input pixels, a 12 x 12 receptive field.
* R-Net (24 x 24 input): ``reg`` (N, 4), ``prob`` (N, 2).
* O-Net (48 x 48 input): ``reg`` (N, 4), ``landmarks`` (N, 10) as x1..x5 then y1..y5 relative to the box,
  ``prob`` (N, 2).

The run path never imports this module; it runs the exported ONNX files.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

from edge.errors import CheckpointError, InputError

log = logging.getLogger("edge")

#: weight file of each network, as facenet-pytorch ships them
WEIGHT_FILES = {"pnet": "pnet.pt", "rnet": "rnet.pt", "onet": "onet.pt"}
#: the exact command that brings the weights without facenet-pytorch's pinned (old) torch
INSTALL_HINT = "pip install --no-deps facenet-pytorch==2.6.0"


class PNet(nn.Module):
    """Proposal network: fully convolutional, scores every 12 x 12 window at stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """Flatten an (N, C, H, W) map in the (W, H, C) order the converted dense weights expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class RNet(nn.Module):
    """Refinement network on 24 x 24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_whc(x)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output network on 48 x 48 crops: score, box offsets and five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_whc(x)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


NETS: dict[str, type[nn.Module]] = {"pnet": PNet, "rnet": RNet, "onet": ONet}


def _installed_weights_dir() -> Path | None:
    """facenet_pytorch's ``data`` folder when the package is installed (found without importing it)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        data = Path(location) / "data"
        if data.is_dir():
            return data
    return None


def _missing(folder: Path) -> list[str]:
    return [f for f in WEIGHT_FILES.values() if not (folder / f).is_file()]


def find_mtcnn_weights(path: str | Path | None = None) -> Path:
    """Return the folder that holds ``pnet.pt``, ``rnet.pt`` and ``onet.pt``.

    ``path`` is searched when given (and must then hold all three); otherwise the ``data`` folder of an
    installed facenet-pytorch. Raises :class:`InputError` saying how to get the files.
    """
    how = (
        f"install them with: {INSTALL_HINT} (only its weight files are used), "
        "or pass a directory that holds pnet.pt, rnet.pt and onet.pt"
    )
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise InputError(f"MTCNN weights directory {str(folder)!r} does not exist; {how}")
        missing = _missing(folder)
        if missing:
            raise InputError(f"MTCNN weights directory {str(folder)!r} lacks {', '.join(missing)}; {how}")
        return folder
    folder = _installed_weights_dir()
    if folder is None:
        raise InputError(f"MTCNN weights not found: facenet-pytorch is not installed; {how}")
    missing = _missing(folder)
    if missing:
        raise InputError(f"the installed facenet-pytorch at {str(folder)!r} lacks {', '.join(missing)}; {how}")
    return folder


def load_mtcnn_nets(path: str | Path | None = None) -> dict[str, nn.Module]:
    """Build P-Net, R-Net and O-Net in eval mode with the weights from :func:`find_mtcnn_weights`."""
    folder = find_mtcnn_weights(path)
    nets: dict[str, nn.Module] = {}
    for name, cls in NETS.items():
        file = folder / WEIGHT_FILES[name]
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # unreadable or not a state dict: say which file
            raise CheckpointError(f"cannot read MTCNN weights {str(file)!r}: {exc}") from exc
        net = cls()
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{str(file)!r} does not match our {cls.__name__} (expected facenet-pytorch 2.6.0's layout): {exc}"
            ) from exc
        nets[name] = net.eval()
        log.debug("loaded %s from %s", name, file)
    return nets
