"""Files that ship inside the package: the starter profile's trained networks (``edge/assets/starter/``).

Profiles name them as ``asset:<folder>/<file>`` (for example ``weights = "asset:starter/vision.fp32.onnx"``), so a
profile works the same from a source checkout and from an installed wheel.  ``<folder>/assets.json`` records how
each file was made (command, data, measured figures) and its SHA-256, which :func:`asset_path` checks.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from edge.errors import InputError

PREFIX = "asset:"
MANIFEST = "assets.json"


def is_asset(ref: str | Path) -> bool:
    return str(ref).startswith(PREFIX)


def _root() -> Path:
    return Path(str(resources.files("edge.assets")))


@lru_cache(maxsize=None)
def asset_manifest(folder: str) -> dict[str, Any]:
    """``<folder>/assets.json`` as a dict ({} when the folder has none)."""
    path = _root() / folder / MANIFEST
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _sha256(path: Path, size: int, mtime: float) -> str:  # size and mtime key the cache: a replaced file is re-hashed
    from edge.fileio import sha256_file

    return sha256_file(path)


def asset_path(ref: str | Path, *, check: bool = True) -> Path:
    """The file or folder an ``asset:`` reference names; with ``check``, a file's SHA-256 must match assets.json."""
    text = str(ref)
    if not is_asset(text):
        raise InputError(f"{text!r} is not an asset reference (expected {PREFIX}<folder>/<file>)")
    rel = text[len(PREFIX):].strip("/")
    path = _root() / rel
    if not rel or ".." in Path(rel).parts or not path.exists():
        raise InputError(f"{text}: not found in the installed package ({path}); reinstall lfmim-edge, or re-create "
                         "the starter assets with scripts/package_starter.py")
    if check and path.is_file():
        folder, _, name = rel.partition("/")
        entry = asset_manifest(folder).get("files", {}).get(name)
        if entry and entry.get("sha256"):
            stat = path.stat()
            if _sha256(path, stat.st_size, stat.st_mtime) != entry["sha256"]:
                raise InputError(f"{text}: {path} does not match the SHA-256 recorded in {folder}/{MANIFEST} "
                                 "(damaged or replaced); reinstall lfmim-edge")
    return path


def resolve(ref: str) -> str:
    """An asset reference as a filesystem path; anything else unchanged."""
    return str(asset_path(ref)) if is_asset(ref) else ref


PACKAGE_PREFIX = "package:"


def is_package_model(ref: str | Path) -> bool:
    return str(ref).startswith(PACKAGE_PREFIX)


def package_model_dir(ref: str) -> Path:
    """The ``model/`` folder (config.json + weights) inside an installed registry package, for ``package:NAME``.

    Found with ``importlib.util.find_spec`` (the package is not imported, nothing is downloaded).
    """
    import importlib.util

    name = str(ref)[len(PACKAGE_PREFIX):] if is_package_model(ref) else str(ref)
    module = name.replace("-", "_")
    hint = f"pip install {name}"
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the model {ref!r} comes from the package {name!r}, which is not installed; "
                         f"install it with: {hint}")
    for root in spec.submodule_search_locations:
        model_dir = Path(root) / "model"
        if (model_dir / "config.json").is_file() and any(model_dir.glob("*.safetensors")):
            return model_dir
    raise InputError(f"the package {name!r} at {list(spec.submodule_search_locations)} has no model/config.json and weights; "
                     f"reinstall it: {hint} --force-reinstall")
