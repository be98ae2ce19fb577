"""Build and load models by variant, from a config dict or a checkpoint file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from edge.config import LFMIMConfig, ModalitySpec
from edge.errors import CheckpointError
from edge.model.checkpoint import Checkpoint, load_checkpoint, load_state_into


def _build_paper(config: Mapping[str, Any]):
    from edge.model.lfmim import LFMIM

    return LFMIM(LFMIMConfig.from_dict(config, source="checkpoint config"))


def _build_authors(config: Mapping[str, Any]):
    from edge.model.authors import build_authors_model

    return build_authors_model(config)


def _paper_specs(config: Mapping[str, Any]) -> dict[str, ModalitySpec]:
    cfg = LFMIMConfig.from_dict(config, source="checkpoint config")
    return {"text": cfg.text, "audio": cfg.audio, "vision": cfg.vision}


def _authors_specs(config: Mapping[str, Any]) -> dict[str, ModalitySpec]:
    from edge.model.authors import AuthorsConfig

    cfg = AuthorsConfig.from_dict(config)
    return {
        "text": ModalitySpec(cfg.text_in, cfg.text_len),
        "audio": ModalitySpec(cfg.audio_in, cfg.audio_len),
        "vision": ModalitySpec(cfg.vision_in, cfg.vision_len),
    }


#: variant -> (builder, input feature specs).  Both variants take (text, audio, vision) and return four logits.
VARIANTS: dict[str, tuple[Callable[[Mapping[str, Any]], Any], Callable[[Mapping[str, Any]], dict[str, ModalitySpec]]]] = {
    "paper": (_build_paper, _paper_specs),
    "authors": (_build_authors, _authors_specs),
}


def _variant(variant: str, source: str):
    try:
        return VARIANTS[variant]
    except KeyError:
        raise CheckpointError(f"{source}: unknown model variant {variant!r}; known: {', '.join(VARIANTS)}") from None


def build_model(variant: str, config: Mapping[str, Any]):
    return _variant(variant, "model")[0](config)


def input_specs(variant: str, config: Mapping[str, Any]) -> dict[str, ModalitySpec]:
    """The (dim, length) of each modality's features that a model of this variant and config expects."""
    return _variant(variant, "model")[1](config)


def load_model(path: str | Path, *, device: str = "cpu"):
    """Load a checkpoint into a fresh model in eval mode.  Returns (model, checkpoint)."""
    ckpt: Checkpoint = load_checkpoint(path)
    model = _variant(ckpt.variant, str(path))[0](ckpt.config)
    load_state_into(model, ckpt.state, source=str(path))
    return model.to(device).eval(), ckpt
