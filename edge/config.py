"""Frozen configuration dataclasses with their defaults in one place.

``LFMIMConfig`` fixes every dimension, length, layer and head count of the model, so features from any
extractor fit as long as the config says so.  Configs round-trip through plain JSON dictionaries
(checkpoints store them beside the weights).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from edge.errors import ConfigError
from edge.labels import CLASSES

MODALITIES: tuple[str, ...] = ("text", "audio", "vision")
#: Output heads in order: the three uni-modal heads then the fused (multi-modal) head.
HEADS: tuple[str, ...] = ("t", "a", "v", "m")
HEAD_NAMES = {"t": "text", "a": "audio", "v": "vision", "m": "multimodal"}


@dataclass(frozen=True)
class ModalitySpec:
    """Feature contract of one modality: a sequence of ``length`` vectors of ``dim`` features."""

    dim: int
    length: int


@dataclass(frozen=True)
class LFMIMConfig:
    """The LFMIM model of Sun et al. (ACL 2023), paper variant.

    Defaults are the paper's: text (80, 768) from BERT-base, audio (100, 768) from wav2vec2-base,
    vision (64, 512) from ResNet18; d = 128, L = 4 layers, 8 heads, seven classes.
    """

    text: ModalitySpec = ModalitySpec(dim=768, length=80)
    audio: ModalitySpec = ModalitySpec(dim=768, length=100)
    vision: ModalitySpec = ModalitySpec(dim=512, length=64)
    classes: tuple[str, ...] = CLASSES
    d_model: int = 128
    num_layers: int = 4
    num_heads: int = 8
    ff_mult: int = 4
    dropout: float = 0.1
    #: Kernel size of the Conv1d that projects each modality to ``d_model`` (odd; padding keeps the length).
    conv_kernel: int = 1
    #: "sinusoidal" (fixed) or "learned" positional embedding.
    positional: str = "sinusoidal"
    #: Pooling of a transformer's output sequence: "mean", "max" or "first" (the multi-modal FEX token).
    pooling: str = "mean"
    #: Hidden width of each classification MLP.
    head_hidden: int = 128
    #: Number of learnable FEX tokens leading the multi-modal sequence.
    num_fex_tokens: int = 1
    #: Initial values of alpha (weight of the uni-modal layer output) and alpha-bar (weight of the multi-modal
    #: stream's own rows) in  Z-dot = alpha * Z + alpha-bar * Z-bar.
    fusion_init: tuple[float, float] = (1.0, 1.0)
    #: "uni": information flows only from the uni-modal modules to the multi-modal one (LFMIM).
    #: "bi": the multi-modal stream also feeds back into each uni-modal stream (the PMR-like ablation).
    flow: str = "uni"

    def __post_init__(self) -> None:
        problems = []
        for name in MODALITIES:
            spec = getattr(self, name)
            if not isinstance(spec, ModalitySpec):
                problems.append(f"{name} must be a ModalitySpec(dim, length), got {spec!r}")
            elif spec.dim < 1 or spec.length < 1:
                problems.append(f"{name} dim and length must be positive, got {spec}")
        if len(self.classes) < 2:
            problems.append(f"classes needs at least two names, got {self.classes!r}")
        if self.d_model < 1 or self.num_heads < 1 or self.d_model % self.num_heads:
            problems.append(f"d_model ({self.d_model}) must be a positive multiple of num_heads ({self.num_heads})")
        if self.num_layers < 1:
            problems.append(f"num_layers must be at least 1, got {self.num_layers}")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            problems.append(f"conv_kernel must be a positive odd number, got {self.conv_kernel}")
        if self.positional not in ("sinusoidal", "learned"):
            problems.append(f"positional must be 'sinusoidal' or 'learned', got {self.positional!r}")
        if self.pooling not in ("mean", "max", "first"):
            problems.append(f"pooling must be 'mean', 'max' or 'first', got {self.pooling!r}")
        if self.flow not in ("uni", "bi"):
            problems.append(f"flow must be 'uni' (LFMIM) or 'bi' (PMR-like ablation), got {self.flow!r}")
        if self.num_fex_tokens < 1:
            problems.append(f"num_fex_tokens must be at least 1, got {self.num_fex_tokens}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ConfigError("invalid LFMIM config: " + "; ".join(problems))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def spec(self, modality: str) -> ModalitySpec:
        return getattr(self, modality)

    @property
    def multimodal_length(self) -> int:
        return self.num_fex_tokens + sum(self.spec(m).length for m in MODALITIES)

    def replace(self, **changes: Any) -> "LFMIMConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["classes"] = list(self.classes)
        out["fusion_init"] = list(self.fusion_init)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> "LFMIMConfig":
        return _from_dict(cls, data, source)


@dataclass(frozen=True)
class TrainConfig:
    """Training options; the defaults are the paper's (SGD, lr 0.005, LambdaLR lr / (epoch + 1), beta_u = 1)."""

    epochs: int = 20
    batch_size: int = 24
    lr: float = 0.005
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    #: "lambda": lr / (epoch + 1) per epoch, the schedule of the authors' public code; "constant"; "cosine".
    schedule: str = "lambda"
    #: Loss weights beta_t, beta_a, beta_v, beta_m.
    loss_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    #: Label mixing of the authors' code: each uni-modal head is trained on
    #: (1 - label_mix) * onehot(y_u) + label_mix * onehot(y_m).  0 is LFMIM; 1 is LFMIM-ML
    #: (every module supervised by the multi-modal label only).
    label_mix: float = 0.0
    seed: int = 0
    grad_clip: float = 0.0
    #: Data-loading worker processes (0 reads in the training process).
    workers: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be at least 1, got {self.batch_size}")
        if self.lr <= 0:
            problems.append(f"lr must be positive, got {self.lr}")
        if self.optimizer not in ("sgd", "adamw"):
            problems.append(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("lambda", "constant", "cosine"):
            problems.append(f"schedule must be 'lambda', 'constant' or 'cosine', got {self.schedule!r}")
        if len(self.loss_weights) != 4 or any(w < 0 for w in self.loss_weights):
            problems.append(f"loss_weights needs four non-negative numbers (t, a, v, m), got {self.loss_weights!r}")
        if not 0.0 <= self.label_mix <= 1.0:
            problems.append(f"label_mix must be in [0, 1], got {self.label_mix}")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["loss_weights"] = list(self.loss_weights)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> "TrainConfig":
        return _from_dict(cls, data, source)


def _from_dict(cls, data: Mapping[str, Any], source: str):
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{source}: unknown {cls.__name__} field(s) {', '.join(unknown)}; known fields: {', '.join(known)}"
        )
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in MODALITIES and cls is LFMIMConfig:
            if isinstance(value, ModalitySpec):
                values[key] = value
            elif isinstance(value, Mapping) and set(value) == {"dim", "length"}:
                values[key] = ModalitySpec(dim=int(value["dim"]), length=int(value["length"]))
            else:
                raise ConfigError(f"{source}: {key} must be an object with 'dim' and 'length', got {value!r}")
        elif isinstance(value, list):
            values[key] = tuple(value)
        else:
            values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); was it written completely?") from None


#: Configs of the bundled presets, by name (``edge-train --model NAME``).
PRESETS: dict[str, LFMIMConfig] = {
    "paper": LFMIMConfig(),
    "tiny": LFMIMConfig(
        text=ModalitySpec(32, 16), audio=ModalitySpec(24, 20), vision=ModalitySpec(16, 12),
        d_model=32, num_layers=2, num_heads=4, head_hidden=32, dropout=0.0,
    ),
}
