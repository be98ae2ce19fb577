"""ResNet-18 written out by hand with torchvision's state-dict names (build path; torch only, no torchvision).

The paper feeds each aligned 224 x 224 face to a ResNet18 fine-tuned on RAF-DB and keeps the 512-d pooled
features of the penultimate layer.  :class:`ResNet18Features` reproduces torchvision's ``resnet18`` (BasicBlock,
layers [2, 2, 2, 2]) parameter for parameter, so any torchvision-layout state dict loads into it, and returns those
pooled features; its optional ``fc`` head is only kept so that such checkpoints load strictly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from edge._lazy import lazy_import
from edge.errors import CheckpointError

torch = lazy_import("torch", purpose="the ResNet18 face feature extractor")
nn = torch.nn

log = logging.getLogger("edge")

#: Width of the pooled features (the paper's vision feature dimension).
FEATURE_DIM = 512
#: Blocks per stage and stage widths of ResNet-18.
LAYERS = (2, 2, 2, 2)
WIDTHS = (64, 128, 256, 512)
#: Keys under which training scripts commonly wrap a state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def _conv3x3(cin: int, cout: int, stride: int = 1) -> "nn.Conv2d":
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (torchvision's ``BasicBlock``)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18Features(nn.Module):
    """ResNet-18 that maps (B, 3, 224, 224) ImageNet-normalised faces to (B, 512) pooled features.

    ``num_classes`` sizes the ``fc`` head of the checkpoint (1000 for ImageNet, 7 for RAF-DB); ``None`` builds no
    head.  :meth:`forward` never applies the head; :meth:`logits` does.
    """

    def __init__(self, num_classes: int | None = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = 64
        for i, (blocks, width) in enumerate(zip(LAYERS, WIDTHS), start=1):
            stride = 1 if i == 1 else 2
            stage = [BasicBlock(cin, width, stride)] + [BasicBlock(width, width) for _ in range(blocks - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            cin = width
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(FEATURE_DIM, num_classes) if num_classes else None
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation: He (fan-out) for convolutions, unit scale and zero shift for batch norms.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def logits(self, x: "torch.Tensor") -> "torch.Tensor":
        if self.fc is None:
            raise CheckpointError("this ResNet18 was built without an fc head (num_classes=None); it has no logits")
        return self.fc(self.forward(x))


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a torchvision-layout state dict from ``.safetensors`` or a torch ``.pth``/``.pt`` file (never unpickles code).

    A dict wrapped as ``{"state_dict": ...}`` (or ``model_state_dict`` / ``model``) is unwrapped and a ``module.``
    prefix (from ``DataParallel``) is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"ResNet18 weights not found at {path}; pass a torchvision-layout state dict (.pth or .safetensors)"
        )
    try:
        if path.suffix == ".safetensors":
            st = lazy_import("safetensors.torch", purpose="reading .safetensors weights")
            state: Any = st.load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # torch and safetensors raise many types for corrupt or foreign files
        raise CheckpointError(f"{path}: cannot read a state dict from this file ({type(exc).__name__}: {exc})") from None
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(hasattr(v, "shape") for v in state.values()):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors, got {type(state).__name__}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _check_keys(model: "ResNet18Features", state: Mapping[str, Any], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(
            f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}"
        )
    if wrong:
        problems.append(
            "wrong shapes: "
            + ", ".join(f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in wrong[:8])
        )
    if problems:
        raise CheckpointError(
            f"{source} is not a torchvision resnet18 state dict: " + "; ".join(problems)
            + " (expected torchvision's names, e.g. conv1.weight, layer1.0.bn1.running_mean, fc.weight)"
        )


def load_resnet18(path: str | Path | None, *, num_classes: int | None = None) -> "ResNet18Features":
    """A :class:`ResNet18Features` in eval mode with weights from ``path`` (random weights when ``path`` is None).

    ``num_classes`` is the size of the file's ``fc`` head; ``None`` takes it from the file (no head when the file
    has none).  Key or shape mismatches raise :class:`~edge.errors.CheckpointError` (an ``InputError``) naming them.
    """
    if path is None:
        log.warning(
            "ResNet18 built with random weights: its features are meaningless for emotion recognition "
            "(fine for tests, export mechanics and timing); pass a torchvision-layout state dict for real use"
        )
        return ResNet18Features(num_classes if num_classes is not None else 1000).eval()
    state = read_state_dict(path)
    if num_classes is None and "fc.weight" in state:
        num_classes = int(state["fc.weight"].shape[0])
    model = ResNet18Features(num_classes)
    _check_keys(model, state, str(path))
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()})
    log.info("ResNet18 weights loaded from %s (fc head: %s)", path, num_classes or "none")
    return model.eval()
