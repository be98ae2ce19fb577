"""Training state for resume (optimizer, scheduler, epoch, RNG) in safetensors + JSON; never pickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge._lazy import lazy_import
from edge.errors import CheckpointError
from edge.fileio import atomic_path

FORMAT = "lfmim-edge-train-state/1"


def _split(obj: Any, prefix: str, tensors: dict, torch) -> Any:
    """Replace every tensor inside ``obj`` by a reference {"__tensor__": key}; tensors go to ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[_split(k, f"{prefix}.k{i}", tensors, torch), _split(v, f"{prefix}.{i}", tensors, torch)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_split(v, f"{prefix}.{i}", tensors, torch) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot store training state value of type {type(obj).__name__} at {prefix}")


def _join(obj: Any, tensors: dict) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_join(k, tensors): _join(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [_join(v, tensors) for v in obj["__list__"]]
    return obj


def save_train_state(path: str | Path, state: dict[str, Any]) -> None:
    """``state`` is a tree of dicts, lists, numbers, strings and tensors (optimizer.state_dict() and friends)."""
    torch = lazy_import("torch")
    st = lazy_import("safetensors.torch")
    tensors: dict = {}
    tree = _split(state, "s", tensors, torch)
    with atomic_path(path) as tmp:
        st.save_file(tensors, str(tmp), metadata={"format": FORMAT, "tree": json.dumps(tree)})


def load_train_state(path: str | Path) -> dict[str, Any]:
    st = lazy_import("safetensors")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training state to resume from; start without --resume")
    try:
        with st.safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        if metadata.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a training-state file (format {metadata.get('format')!r})")
        return _join(json.loads(metadata["tree"]), tensors)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: training state is damaged ({exc}); start again without --resume") from None
