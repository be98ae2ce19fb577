"""LFMIM, paper variant (Sun et al., ACL 2023, sections 4.2-4.4).

Three uni-modal modules (text, audio, vision): Conv1d to ``d_model``, positional embedding, L self-attention
layers, pooling and an MLP.  One multi-modal module: a learnable FEX token; the input of its layer l + 1 is
``[FEX; Z-dot_t; Z-dot_a; Z-dot_v]`` with ``Z-dot_u = alpha_u * Z_u + alpha-bar_u * Z-bar_u``, where ``Z_u`` is the
output of the l-th uni-modal layer (the embedded input for l = 0) and ``Z-bar_u`` the multi-modal stream's own rows
for modality u from its previous layer (all zeros at the first layer).  Information flows only from the uni-modal
modules to the multi-modal one, unless ``flow = "bi"`` (the PMR-like ablation) feeds the multi-modal rows back.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from edge.config import LFMIMConfig, MODALITIES
from edge.model.layers import Block, ClassifierHead, PositionalEmbedding


class LFMIMOutput(NamedTuple):
    """Class logits of the four heads, each (batch, classes)."""

    t: torch.Tensor
    a: torch.Tensor
    v: torch.Tensor
    m: torch.Tensor


class UniModalEncoder(nn.Module):
    def __init__(self, in_dim: int, length: int, cfg: LFMIMConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.proj = nn.Conv1d(in_dim, d, kernel_size=cfg.conv_kernel, padding=cfg.conv_kernel // 2)
        self.pos = PositionalEmbedding(length, d, cfg.positional)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Block(d, cfg.num_heads, cfg.ff_mult, cfg.dropout) for _ in range(cfg.num_layers))
        self.head = ClassifierHead(d, cfg.head_hidden, cfg.num_classes, cfg.pooling, cfg.dropout)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, length, in_dim) features -> Z^1, (batch, length, d_model)."""
        return self.drop(self.pos(self.proj(x.transpose(1, 2)).transpose(1, 2)))


class MultiModalModule(nn.Module):
    def __init__(self, cfg: LFMIMConfig) -> None:
        super().__init__()
        d, layers = cfg.d_model, cfg.num_layers
        self.fex = nn.Parameter(torch.randn(cfg.num_fex_tokens, d) * d**-0.5)
        self.layers = nn.ModuleList(Block(d, cfg.num_heads, cfg.ff_mult, cfg.dropout) for _ in range(layers))
        # alpha[l, u] weighs the uni-modal stream, alpha_bar[l, u] the multi-modal stream's own rows.
        self.alpha = nn.Parameter(torch.full((layers, len(MODALITIES)), float(cfg.fusion_init[0])))
        self.alpha_bar = nn.Parameter(torch.full((layers, len(MODALITIES)), float(cfg.fusion_init[1])))
        self.head = ClassifierHead(d, cfg.head_hidden, cfg.num_classes, cfg.pooling, cfg.dropout)


class LFMIM(nn.Module):
    def __init__(self, config: LFMIMConfig | None = None) -> None:
        super().__init__()
        cfg = config or LFMIMConfig()
        self.config = cfg
        self.text = UniModalEncoder(cfg.text.dim, cfg.text.length, cfg)
        self.audio = UniModalEncoder(cfg.audio.dim, cfg.audio.length, cfg)
        self.vision = UniModalEncoder(cfg.vision.dim, cfg.vision.length, cfg)
        self.multi = MultiModalModule(cfg)
        if cfg.flow == "bi":
            # PMR-like ablation: gamma[l, u] scales the multi-modal rows fed back into uni-modal stream u.
            self.feedback = nn.Parameter(torch.full((cfg.num_layers, len(MODALITIES)), 0.5))
        self._lengths = [cfg.num_fex_tokens] + [cfg.spec(m).length for m in MODALITIES]

    def encoders(self) -> tuple[UniModalEncoder, UniModalEncoder, UniModalEncoder]:
        return self.text, self.audio, self.vision

    def forward(self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor) -> LFMIMOutput:
        encoders = self.encoders()
        z = [enc.embed(x) for enc, x in zip(encoders, (text, audio, vision))]
        fex = self.multi.fex.unsqueeze(0).expand(text.shape[0], -1, -1)
        z_bar: list[torch.Tensor] | None = None  # all zeros at the first layer
        for layer in range(self.config.num_layers):
            alpha, alpha_bar = self.multi.alpha[layer], self.multi.alpha_bar[layer]
            dots = [
                alpha[u] * z[u] if z_bar is None else alpha[u] * z[u] + alpha_bar[u] * z_bar[u]
                for u in range(len(MODALITIES))
            ]
            fused = self.multi.layers[layer](torch.cat([fex, *dots], dim=1))
            fex, *z_bar = torch.split(fused, self._lengths, dim=1)
            z = [enc.layers[layer](zu) for enc, zu in zip(encoders, z)]
            if self.config.flow == "bi":
                z = [zu + self.feedback[layer, u] * z_bar[u] for u, zu in enumerate(z)]
        fused_sequence = torch.cat([fex, *z_bar], dim=1)
        return LFMIMOutput(
            t=self.text.head(z[0]),
            a=self.audio.head(z[1]),
            v=self.vision.head(z[2]),
            m=self.multi.head(fused_sequence),
        )


def lfmim_loss(
    outputs: "LFMIMOutput | tuple[torch.Tensor, ...]",
    labels: torch.Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    label_mix: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over heads u of beta_u * CE(y_u, y-hat_u).

    ``labels`` is (batch, 4) in head order t, a, v, m; -1 marks a missing label, whose row is left out of that
    head's mean.  ``label_mix`` trains each uni-modal head on (1 - mix) * onehot(y_u) + mix * onehot(y_m)
    (1.0 = LFMIM-ML: every module supervised by the multi-modal label only).
    Returns (total loss, per-head losses (4,)).
    """
    num_classes = outputs[3].shape[1]
    y_m = labels[:, 3]
    per_head = []
    for index, logits in enumerate(outputs):
        y = labels[:, index]
        if index < 3 and label_mix > 0.0:
            valid = (y >= 0) & (y_m >= 0)
            target = (1.0 - label_mix) * F.one_hot(y.clamp(min=0), num_classes) + label_mix * F.one_hot(
                y_m.clamp(min=0), num_classes
            )
            loss = F.cross_entropy(logits[valid], target[valid].float(), reduction="sum")
        else:
            valid = y >= 0
            loss = F.cross_entropy(logits[valid], y[valid], reduction="sum")
        per_head.append(loss / valid.sum().clamp(min=1))
    losses = torch.stack(per_head)
    total = (losses * torch.tensor(weights, dtype=losses.dtype, device=losses.device)).sum()
    return total, losses
