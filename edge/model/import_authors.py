"""Import a checkpoint written by the authors' public training code into an lfmim-edge checkpoint.

Their code saves ``torch.save(model.state_dict())`` of a DistributedDataParallel model, so every name starts
with ``module.``.  The file is read with ``weights_only=True`` (never a full unpickling), every name and shape
is checked against :class:`~edge.model.authors.AuthorsLFMIM`, and the weights are written as a safetensors
checkpoint of variant ``"authors"`` that :func:`edge.model.checkpoint.load_checkpoint` reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from edge._lazy import lazy_import
from edge.errors import CheckpointError, ConfigError
from edge.model.authors import VARIANT, AuthorsConfig, expected_shapes
from edge.model.checkpoint import save_checkpoint

PREFIX = "module."
#: Buffer of the authors' positional-embedding module; it holds no weights.
DROPPED = ("embed_positions._float_tensor",)
IMPORTED_FROM = "sunjunaimer/LFMIM LFMIM0723v2"
#: Mismatches listed in an error message before "...".
_SHOWN = 5


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ")"


def read_authors_state(src: str | Path) -> dict[str, Any]:
    """Read the state dict (name -> tensor) of an authors' checkpoint, without ``module.`` and dropped buffers."""
    torch = lazy_import("torch", purpose="importing the authors' checkpoints")
    src = Path(src)
    if not src.is_file():
        raise CheckpointError(f"{src}: file not found; pass the .pth/.pt state dict saved by the authors' code")
    try:
        raw = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types (UnpicklingError, RuntimeError, EOFError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{src}: not a PyTorch state-dict file that loads with weights_only=True ({first}); "
            "pass the file written by torch.save(model.state_dict()) in the authors' code"
        ) from None
    if isinstance(raw, Mapping) and not any(isinstance(v, torch.Tensor) for v in raw.values()):
        for wrapper in ("state_dict", "model"):  # tolerate a state dict nested one level down
            if isinstance(raw.get(wrapper), Mapping):
                raw = raw[wrapper]
                break
    if not isinstance(raw, Mapping) or not raw:
        raise CheckpointError(f"{src}: expected a non-empty state dict (name -> tensor), found {type(raw).__name__}")
    state: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{src}: entry {key!r} is not a named tensor ({type(value).__name__})")
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if name in state:
            raise CheckpointError(f"{src}: {name} appears both with and without the {PREFIX!r} prefix")
        if name not in DROPPED:
            state[name] = value
    return state


def _need(state: Mapping[str, Any], name: str, ndim: int, src: Path) -> tuple[int, ...]:
    if name not in state:
        raise CheckpointError(
            f"{src}: cannot infer the model config: {name} is missing; is this a checkpoint of the authors' "
            "LFMIMv2 (sunjunaimer/LFMIM LFMIM0723v2)? Pass config= to skip inference"
        )
    shape = tuple(state[name].shape)
    if len(shape) != ndim:
        raise CheckpointError(f"{src}: cannot infer the model config: {name} has shape {_shape(shape)}, "
                              f"expected {ndim} dimension(s)")
    return shape


def _block_count(state: Mapping[str, Any], stream: str) -> int:
    pattern = re.compile(rf"^{stream}\.(\d+)\.")
    indices = {int(m.group(1)) for name in state if (m := pattern.match(name))}
    return max(indices) + 1 if indices else 0


#: Config fields that the shapes of a state dict determine (the others: heads, classes, dropout rates).
INFERABLE = ("width", "layers", "vision_blocks_per_layer", "text_in", "audio_in", "vision_in",
             "text_len", "audio_len", "vision_len", "num_m_tokens")


def _inferred_fields(state: Mapping[str, Any], src: Path) -> dict[str, int]:
    width, text_in = _need(state, "fc_tdimtr.weight", 2, src)
    layers = _block_count(state, "transformer_t")
    vision_blocks = _block_count(state, "transformer_v")
    if layers == 0:
        raise CheckpointError(f"{src}: cannot infer the model config: no transformer_t.N.* weights found")
    if vision_blocks % layers:
        raise CheckpointError(
            f"{src}: cannot infer the model config: {vision_blocks} vision blocks is not a multiple of {layers} layers"
        )
    return {
        "width": width, "layers": layers, "vision_blocks_per_layer": vision_blocks // layers,
        "text_in": text_in,
        "audio_in": _need(state, "fc_adimtr.weight", 2, src)[1],
        "vision_in": _need(state, "fc_vdimtr.weight", 2, src)[1],
        "text_len": _need(state, "mix_t", 1, src)[0] - 1,
        "audio_len": _need(state, "mix_a", 1, src)[0] - 1,
        "vision_len": _need(state, "mix_v", 1, src)[0] - 1,
        "num_m_tokens": _need(state, "embedding_m", 2, src)[0],
    }


def infer_config(state: Mapping[str, Any], *, heads: int = 16, source: str | Path = "checkpoint") -> AuthorsConfig:
    """The :class:`AuthorsConfig` that a state dict's shapes imply; ``heads`` cannot be read from shapes."""
    src = Path(source)
    try:
        return AuthorsConfig(heads=heads, **_inferred_fields(state, src))
    except ConfigError as exc:
        raise CheckpointError(f"{src}: the shapes imply an invalid config: {exc}") from None


def resolve_config(
    state: Mapping[str, Any],
    config: AuthorsConfig | Mapping[str, Any] | None,
    *,
    heads: int | None,
    source: str | Path,
) -> AuthorsConfig:
    """The config to import with: ``config`` as given, completed from the shapes where it leaves fields out.

    An :class:`AuthorsConfig` is used as it is; a dictionary fixes the fields it names (``{"heads": 8}``
    overrides the head count only) and the shapes give the rest.
    """
    src = Path(source)
    if isinstance(config, AuthorsConfig):
        if heads is not None and heads != config.heads:
            raise ConfigError(f"heads={heads} contradicts the given config's heads={config.heads}; pass only one")
        return config
    given = dict(config or {})
    if heads is not None:
        if given.get("heads", heads) != heads:
            raise ConfigError(f"heads={heads} contradicts the given config's heads={given['heads']}; pass only one")
        given["heads"] = heads
    if all(name in given for name in INFERABLE):
        return AuthorsConfig.from_dict(given, source=str(src))
    inferred = infer_config(state, heads=given.get("heads", 16), source=src)
    return AuthorsConfig.from_dict({**inferred.to_dict(), **given}, source=str(src))


def check_state(state: Mapping[str, Any], config: AuthorsConfig, *, source: str | Path) -> None:
    """Raise :class:`CheckpointError` listing the first names / shapes that differ from the model's."""
    torch = lazy_import("torch", purpose="importing the authors' checkpoints")
    expected = expected_shapes(config)
    problems = []
    for name, tensor in state.items():  # in the file's order (the authors' module order)
        shape = tuple(tensor.shape)
        if name not in expected:
            problems.append(f"unexpected {name} {_shape(shape)}")
        elif shape != expected[name]:
            problems.append(f"expected {name} {_shape(expected[name])}, found {_shape(shape)}")
        elif not torch.is_floating_point(tensor):
            problems.append(f"expected {name} to be floating point, found {tensor.dtype}")
    problems += [f"expected {name} {_shape(shape)}, found nothing" for name, shape in expected.items()
                 if name not in state]
    if problems:
        more = f" ... ({len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise CheckpointError(
            f"{source}: does not match the authors' LFMIM (width {config.width}, {config.layers} layers): "
            + "; ".join(problems[:_SHOWN]) + more
        )


def import_authors_checkpoint(
    src: str | Path,
    dst: str | Path,
    *,
    config: AuthorsConfig | Mapping[str, Any] | None = None,
    heads: int | None = None,
) -> Path:
    """Convert the authors' ``state_dict`` file ``src`` to our safetensors checkpoint ``dst``; returns ``dst``.

    Without ``config`` the dimensions are inferred from the shapes, with ``heads`` (default 16, the
    authors' value) attention heads; a ``config`` dictionary fixes only the fields it names (see
    :func:`resolve_config`), an :class:`AuthorsConfig` fixes all of them.  Raises :class:`CheckpointError`
    naming ``src`` when the file cannot be read or any name or shape differs from the model's.
    """
    src = Path(src)
    state = read_authors_state(src)
    cfg = resolve_config(state, config, heads=heads, source=src)
    check_state(state, cfg, source=src)
    ordered = {name: state[name] for name in expected_shapes(cfg)}
    meta = {"source": str(src), "imported_from": IMPORTED_FROM}
    return save_checkpoint(dst, ordered, cfg.to_dict(), variant=VARIANT, meta=meta)
