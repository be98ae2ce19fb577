"""The LFMIM variant trained by the authors' public code (sunjunaimer/LFMIM, LFMIM0723v2).

It differs from the paper's description: width 1024 everywhere, two vision blocks per layer, a learnable
token prepended to every uni-modal stream, sinusoidal positions added after a LayerNorm, learnable pooling
vectors (``mix_*``) and one set of fusion weights (``plus_p``) shared by all layers.  The module's
``state_dict`` names are exactly those of the authors' checkpoints without DistributedDataParallel's
``module.`` prefix, including parameters the forward pass never uses, so their weights load strictly
(see :mod:`edge.model.import_authors`).

The forward pass is written for export: no Python branch depends on a tensor value, attention is plain
MatMul / Softmax, and LayerNorm is computed in float32 whatever the model's dtype.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from edge.errors import ConfigError, InputError
from edge.labels import CLASSES

#: The checkpoint variant name of this model (``save_checkpoint(..., variant=VARIANT)``).
VARIANT = "authors"
#: Length of the unused ``me`` parameter; the authors' code fixes it at 4 whatever the token count.
ME_LENGTH = 4


@dataclass(frozen=True)
class AuthorsConfig:
    """Dimensions of the authors' model; the defaults are those of their public training code.

    ``*_len`` are the raw feature lengths the model takes (text is cropped to its first ``text_len``
    positions, audio cropped or zero-padded to ``audio_len`` frames); each stream is one token longer
    inside the model because of the prepended learnable token.
    """

    width: int = 1024
    heads: int = 16
    layers: int = 4
    vision_blocks_per_layer: int = 2
    text_in: int = 1024
    audio_in: int = 1024
    vision_in: int = 2048
    text_len: int = 80
    audio_len: int = 50
    vision_len: int = 16
    num_m_tokens: int = 4
    classes: tuple[str, ...] = CLASSES
    #: Dropout after the positional embedding, on the attention weights and inside the block MLP
    #: (the authors' values; active in training mode only).
    input_dropout: float = 0.25
    attn_dropout: float = 0.2
    mlp_dropout: float = 0.1

    def __post_init__(self) -> None:
        problems = []
        for name in ("width", "heads", "layers", "vision_blocks_per_layer", "text_in", "audio_in", "vision_in",
                     "text_len", "audio_len", "vision_len", "num_m_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if not problems:
            if self.width < 4:
                problems.append(f"width must be at least 4 (sinusoidal positions), got {self.width}")
            if self.width % self.heads:
                problems.append(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        if (not isinstance(self.classes, tuple) or len(self.classes) < 2
                or not all(isinstance(c, str) and c for c in self.classes)):
            problems.append(f"classes needs at least two non-empty names, got {self.classes!r}")
        for name in ("input_dropout", "attn_dropout", "mlp_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
                problems.append(f"{name} must be in [0, 1), got {value!r}")
        if problems:
            raise ConfigError("invalid authors' LFMIM config: " + "; ".join(problems))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def text_seq(self) -> int:
        """Length of the text stream inside the model (the token plus ``text_len`` positions)."""
        return self.text_len + 1

    @property
    def audio_seq(self) -> int:
        return self.audio_len + 1

    @property
    def vision_seq(self) -> int:
        return self.vision_len + 1

    @property
    def multimodal_seq(self) -> int:
        """Length of the multi-modal stream: its tokens, then the text, vision and audio parts."""
        return self.num_m_tokens + self.text_seq + self.vision_seq + self.audio_seq

    def replace(self, **changes: Any) -> "AuthorsConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["classes"] = list(self.classes)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> "AuthorsConfig":
        """Build from a plain (JSON) dictionary; unknown fields and bad values raise :class:`ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a JSON object for AuthorsConfig, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"{source}: unknown AuthorsConfig field(s) {', '.join(map(str, unknown))}; "
                f"known fields: {', '.join(known)}"
            )
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def _as_config(config: AuthorsConfig | Mapping[str, Any]) -> AuthorsConfig:
    return config if isinstance(config, AuthorsConfig) else AuthorsConfig.from_dict(config)


# --------------------------------------------------------------------------------------------- helpers


def fit_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Crop (batch, time, features) to its first ``length`` steps, or zero-pad it at the end to ``length``."""
    x = x[:, :length]
    missing = length - x.shape[1]
    return F.pad(x, (0, 0, 0, missing)) if missing > 0 else x


def pad_audio(audio: torch.Tensor, length: int = AuthorsConfig.audio_len) -> torch.Tensor:
    """Audio frames cropped to ``length`` or zero-padded after the last frame, as the authors' collate does."""
    return fit_length(audio, length)


def sinusoidal_rows(length: int, dim: int, *, device: torch.device | None = None) -> torch.Tensor:
    """Sinusoidal embeddings of positions 1..length, shape (length, dim), float32.

    tensor2tensor layout: features [0, half) are sin(p * f_k), [half, 2 * half) cos(p * f_k), with
    f_k = exp(-log(10000) * k / (half - 1)); an odd ``dim`` gets a last all-zero feature.
    """
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=device) * -(math.log(10000.0) / (half - 1)))
    angle = torch.arange(1, length + 1, dtype=torch.float32, device=device).unsqueeze(1) * freq.unsqueeze(0)
    rows = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)
    if dim % 2:
        rows = F.pad(rows, (0, 1))
    return rows


def add_positions(x: torch.Tensor) -> torch.Tensor:
    """Add sinusoidal positions to (batch, time, dim): step i gets position i + 1, padding the zero row.

    A step whose first feature is exactly 0 is padding, as in the authors' (MulT / early fairseq)
    embedding: positions are the absolute index plus one, masked, not renumbered around the padding.
    """
    rows = sinusoidal_rows(x.shape[1], x.shape[2], device=x.device).to(x.dtype)
    keep = (x[..., 0] != 0).to(x.dtype).unsqueeze(-1)
    return x + keep * rows


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and returned in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)


# ---------------------------------------------------------------------------------------------- blocks


class PackedSelfAttention(nn.Module):
    """Self attention with the parameter names of ``nn.MultiheadAttention`` (packed q, k, v projection)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        head_dim = width // self.heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.reshape(batch, steps, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(torch.matmul(q * head_dim**-0.5, k.transpose(-1, -2)), dim=-1)
        weights = F.dropout(weights, p=self.dropout, training=self.training)
        mixed = torch.matmul(weights, v).transpose(1, 2).reshape(batch, steps, width)
        return self.out_proj(mixed)


class FeedForward(nn.Module):
    """``c_fc`` -> ReLU -> dropout -> ``c_proj``."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.dropout(torch.relu(self.c_fc(x)), p=self.dropout, training=self.training)
        return self.c_proj(hidden)


class AuthorsBlock(nn.Module):
    """Residual block with a LayerNorm before and after each sub-layer.

    x = x + ln_12(attn(ln_1(x)));  x = x + ln_22(mlp(ln_2(x)))
    """

    def __init__(self, width: int, heads: int, attn_dropout: float, mlp_dropout: float) -> None:
        super().__init__()
        self.attn = PackedSelfAttention(width, heads, attn_dropout)
        self.ln_1 = FP32LayerNorm(width)
        self.ln_12 = FP32LayerNorm(width)
        self.mlp = FeedForward(width, mlp_dropout)
        self.ln_2 = FP32LayerNorm(width)
        self.ln_22 = FP32LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ln_12(self.attn(self.ln_1(x)))
        return x + self.ln_22(self.mlp(self.ln_2(x)))


def _relu_mlp(*dims: int) -> nn.Sequential:
    """Linear layers of the given sizes with a ReLU between consecutive ones (keys .0, .2, .4, ...)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------- model


class AuthorsLFMIM(nn.Module):
    """The authors' LFMIM: ``forward(text, audio, vision)`` -> logits (t, a, v, m), each (batch, classes).

    Inputs are (batch, time, features): text (B, >= 1, text_in) cropped to ``text_len`` (zero-padded if
    shorter), audio (B, any, audio_in) cropped / zero-padded to ``audio_len``, vision (B, vision_len,
    vision_in).
    """

    def __init__(self, config: AuthorsConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config if config is not None else AuthorsConfig()
        w = cfg.width
        block = lambda: AuthorsBlock(w, cfg.heads, cfg.attn_dropout, cfg.mlp_dropout)  # noqa: E731
        self.transformer_t = nn.ModuleList(block() for _ in range(cfg.layers))
        self.transformer_a = nn.ModuleList(block() for _ in range(cfg.layers))
        self.transformer_v = nn.ModuleList(block() for _ in range(cfg.layers * cfg.vision_blocks_per_layer))
        self.transformer_m = nn.ModuleList(block() for _ in range(cfg.layers))

        # Present in the authors' model and checkpoints but unused by its forward pass.
        self.t2m = nn.ModuleList(nn.Linear(cfg.text_seq, 1) for _ in range(cfg.layers))
        self.v2m = nn.ModuleList(nn.Linear(cfg.vision_seq, 1) for _ in range(cfg.layers))
        self.fc_vtom = nn.Linear(w, w)

        self.fc_tdimtr = nn.Linear(cfg.text_in, w)
        self.fc_adimtr = nn.Linear(cfg.audio_in, w)
        self.fc_vdimtr = nn.Linear(cfg.vision_in, w)

        for stage in ("pre", "post", "prepe"):
            for s in "tavm":
                self.add_module(f"ln_{stage}_{s}", FP32LayerNorm(w))

        self.proj_a = nn.Parameter(torch.empty(w, w))  # unused
        self.proj_v = nn.Parameter(torch.empty(w, w))  # unused
        self.mix_t = nn.Parameter(torch.empty(cfg.text_seq))
        self.mix_a = nn.Parameter(torch.empty(cfg.audio_seq))
        self.mix_v = nn.Parameter(torch.empty(cfg.vision_seq))
        self.mix_m = nn.Parameter(torch.empty(cfg.multimodal_seq))
        self.mlp_t = _relu_mlp(w, w // 2, 32, cfg.num_classes)
        self.mlp_a = _relu_mlp(w, w // 2, 32, cfg.num_classes)
        self.mlp_v = _relu_mlp(w, w // 2, 32, cfg.num_classes)
        self.mlp_m = _relu_mlp(4 * w, 2 * w, 128, 64, cfg.num_classes)
        self.plus_p = nn.Parameter(torch.empty(6))

        # Unused learned position tables and ``me``.
        self.pe_t = nn.Parameter(torch.empty(cfg.text_seq, w))
        self.pe_t2m = nn.Parameter(torch.empty(cfg.text_seq, w))
        self.pe_a = nn.Parameter(torch.empty(cfg.audio_seq, w))
        self.pe_v = nn.Parameter(torch.empty(cfg.vision_seq, w))
        self.pe_v2m = nn.Parameter(torch.empty(cfg.vision_seq, w))
        self.pe_m = nn.Parameter(torch.empty(cfg.num_m_tokens, w))
        self.me = nn.Parameter(torch.empty(ME_LENGTH))

        self.embedding_t = nn.Parameter(torch.empty(w))
        self.embedding_a = nn.Parameter(torch.empty(w))
        self.embedding_v = nn.Parameter(torch.empty(w))
        self.embedding_m = nn.Parameter(torch.empty(cfg.num_m_tokens, w))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise the free parameters and the blocks for training from scratch."""
        cfg, w = self.config, self.config.width
        std = w**-0.5
        for p in (self.embedding_t, self.embedding_a, self.embedding_v, self.embedding_m, self.proj_a, self.proj_v,
                  self.pe_t, self.pe_t2m, self.pe_a, self.pe_v, self.pe_v2m, self.pe_m, self.me):
            nn.init.normal_(p, std=std)
        for mix in (self.mix_t, self.mix_a, self.mix_v, self.mix_m):
            nn.init.uniform_(mix, 0.0, mix.numel() ** -0.5)
        nn.init.normal_(self.plus_p)
        for blocks, depth in ((self.transformer_t, cfg.layers), (self.transformer_a, cfg.layers),
                              (self.transformer_m, cfg.layers),
                              (self.transformer_v, cfg.layers * cfg.vision_blocks_per_layer)):
            out_std = std * (2 * depth) ** -0.5
            for blk in blocks:
                nn.init.normal_(blk.attn.in_proj_weight, std=std)
                nn.init.normal_(blk.attn.out_proj.weight, std=out_std)
                nn.init.normal_(blk.mlp.c_fc.weight, std=(2 * w) ** -0.5)
                nn.init.normal_(blk.mlp.c_proj.weight, std=out_std)

    # ------------------------------------------------------------------------------------------ forward

    def _check(self, name: str, x: torch.Tensor, dim: int, length: int | None = None) -> None:
        if x.dim() != 3 or x.shape[-1] != dim or (length is not None and x.shape[1] != length):
            want = f"(batch, {length if length is not None else 'time'}, {dim})"
            raise InputError(f"{name} features must have shape {want}, got {tuple(x.shape)}")

    def _embed(self, x: torch.Tensor, prepe: nn.Module, pre: nn.Module) -> torch.Tensor:
        """Scale by sqrt(width), ln_prepe, sinusoidal positions, dropout, ln_pre."""
        x = prepe(x * math.sqrt(self.config.width))
        x = F.dropout(add_positions(x), p=self.config.input_dropout, training=self.training)
        return pre(x)

    @staticmethod
    def _with_token(token: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([token.to(x.dtype).expand(x.shape[0], 1, x.shape[2]), x], dim=1)

    def forward(
        self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.config
        self._check("text", text, cfg.text_in)
        self._check("audio", audio, cfg.audio_in)
        self._check("vision", vision, cfg.vision_in, cfg.vision_len)
        dtype = self.fc_tdimtr.weight.dtype
        t = self.fc_tdimtr(fit_length(text, cfg.text_len).to(dtype))
        a = self.fc_adimtr(pad_audio(audio, cfg.audio_len).to(dtype))
        v = self.fc_vdimtr(vision.to(dtype))

        t = self._embed(self._with_token(self.embedding_t, t), self.ln_prepe_t, self.ln_pre_t)
        a = self._embed(self._with_token(self.embedding_a, a), self.ln_prepe_a, self.ln_pre_a)
        v = self._embed(self._with_token(self.embedding_v, v), self.ln_prepe_v, self.ln_pre_v)
        m = self.embedding_m.to(dtype).unsqueeze(0).expand(t.shape[0], -1, -1)
        m = self._embed(m, self.ln_prepe_m, self.ln_pre_m)

        n_m, n_t, n_v = cfg.num_m_tokens, cfg.text_seq, cfg.vision_seq
        p = self.plus_p
        for i in range(cfg.layers):
            if i == 0:
                m = torch.cat([m[:, :n_m], t, v, a], dim=1)
            else:
                m_t = m[:, n_m:n_m + n_t]
                m_v = m[:, n_m + n_t:n_m + n_t + n_v]
                m_a = m[:, n_m + n_t + n_v:]
                m = torch.cat([m[:, :n_m], m_t * p[0] + t * p[1], m_v * p[2] + v * p[3], m_a * p[4] + a * p[5]], dim=1)
            t = self.transformer_t[i](t)
            a = self.transformer_a[i](a)
            for j in range(cfg.vision_blocks_per_layer):
                v = self.transformer_v[i * cfg.vision_blocks_per_layer + j](v)
            m = self.transformer_m[i](m)

        t = torch.matmul(self.mix_t, self.ln_post_t(t))
        a = torch.matmul(self.mix_a, self.ln_post_a(a))
        v = torch.matmul(self.mix_v, self.ln_post_v(v))
        m = torch.matmul(self.mix_m, self.ln_post_m(m))
        fused = torch.cat([t, a, v, m], dim=-1)
        return self.mlp_t(t), self.mlp_a(a), self.mlp_v(v), self.mlp_m(fused)


def build_authors_model(config_dict: AuthorsConfig | Mapping[str, Any]) -> AuthorsLFMIM:
    """A fresh :class:`AuthorsLFMIM` from a config dictionary (as stored in a checkpoint) or config."""
    return AuthorsLFMIM(_as_config(config_dict))


def expected_shapes(config: AuthorsConfig | Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of the model's state dict, computed without allocating weights."""
    with torch.device("meta"):
        model = AuthorsLFMIM(_as_config(config))
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}
