"""Checkpoints: one safetensors file whose metadata carries the JSON config, plus a readable JSON copy.

Layout of a checkpoint ``best.safetensors``:
- tensors: the model's state dict (float32, contiguous);
- metadata (``__metadata__``, strings only): ``format`` = "lfmim-edge/1", ``variant`` ("paper" or "authors"),
  ``config`` (the model config as JSON) and ``meta`` (free JSON: epoch, metrics, source, ...);
- ``best.json`` beside it: the same config and meta, for people and tools (never read back by the loader, so
  the weights and the config that describe them can never disagree).

Loading never unpickles anything.  Every file is written to a temporary name in the same directory and moved
into place with ``os.replace``, so a crash leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from edge._lazy import lazy_import
from edge.errors import CheckpointError
from edge.fileio import atomic_path, write_text_atomic

FORMAT = "lfmim-edge/1"

@dataclass(frozen=True)
class Checkpoint:
    path: Path
    variant: str
    config: dict[str, Any]
    meta: dict[str, Any]
    state: dict[str, Any]  # name -> torch.Tensor


def save_checkpoint(
    path: str | Path,
    state: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    variant: str = "paper",
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``state`` (name -> tensor) with its config atomically; returns the path written."""
    torch = lazy_import("torch", purpose="saving checkpoints")
    st = lazy_import("safetensors.torch", purpose="saving checkpoints")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: a checkpoint file name must end in .safetensors")
    tensors = {k: v.detach().to(torch.float32).contiguous().cpu() if v.is_floating_point() else v.detach().contiguous().cpu()
               for k, v in state.items()}
    metadata = {
        "format": FORMAT,
        "variant": variant,
        "config": json.dumps(dict(config), ensure_ascii=False),
        "meta": json.dumps(dict(meta or {}), ensure_ascii=False),
    }
    with atomic_path(path) as tmp:
        st.save_file(tensors, str(tmp), metadata=metadata)
    sidecar = {"format": FORMAT, "variant": variant, "config": dict(config), "meta": dict(meta or {})}
    write_text_atomic(path.with_suffix(".json"), json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n")
    return path


def read_metadata(path: str | Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Return (variant, config, meta) of a checkpoint without loading its tensors (no torch needed)."""
    path = Path(path)
    st = lazy_import("safetensors", purpose="reading checkpoints")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; pass the .safetensors file written by edge-train")
    try:
        with st.safe_open(str(path), framework="numpy") as fh:
            metadata = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(
            f"{path}: not a readable safetensors checkpoint ({exc}); was it written completely? "
            "Re-run edge-train or pass another checkpoint"
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an lfmim-edge checkpoint (metadata format {metadata.get('format')!r}, expected {FORMAT!r}); "
            "a checkpoint of the authors' public code is imported with `edge-train import-authors`"
        )
    try:
        config = json.loads(metadata["config"])
        meta = json.loads(metadata.get("meta", "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is damaged ({exc})") from None
    return metadata.get("variant", "paper"), config, meta


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint's tensors and metadata; never unpickles."""
    variant, config, meta = read_metadata(path)
    st = lazy_import("safetensors.torch", purpose="loading checkpoints")
    try:
        state = st.load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: the tensors cannot be read ({exc}); the file is damaged") from None
    return Checkpoint(path=Path(path), variant=variant, config=config, meta=meta, state=state)


def load_state_into(model: Any, state: Mapping[str, Any], *, source: str) -> None:
    """Load ``state`` into ``model`` strictly, with an error that lists what does not match."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} (model wants {tuple(own[k].shape)})"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatch: " + ", ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else ""))
        if missing:
            parts.append("missing: " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append("unexpected: " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))
        raise CheckpointError(
            f"{source}: checkpoint does not match the model config ({'; '.join(parts)}); "
            "use the config stored with the checkpoint, or retrain"
        )
    model.load_state_dict(state, strict=True)
