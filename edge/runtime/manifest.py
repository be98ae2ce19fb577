"""The build manifest (run side: read and checked before anything is loaded; the build side writes it): what was built, from what, for which machine, and how faithful it is.

``engines/<profile>/<target>/manifest.json`` records the profile (name and hash), a hash of the package source,
package versions, the TensorRT version and GPU (name, compute capability) where engines were built, per network
the precision, the files (with their SHA-256), the I/O shapes and the fidelity figures.  :func:`check_manifest`
runs before anything is loaded and fails with the exact rebuild command on a mismatch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any, Mapping

from edge.errors import EngineIncompatible, InputError
from edge.fileio import sha256_file, write_text_atomic

log = logging.getLogger("edge")

FORMAT = "lfmim-edge-build/1"
MANIFEST = "manifest.json"
PACKAGES = ("lfmim-edge", "numpy", "onnx", "onnxruntime", "torch", "transformers", "tensorrt", "pycuda",
            "opencv-python-headless")


def source_hash() -> str:
    """SHA-256 over the package's Python sources and shipped profiles (what produced the artifacts)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (None where it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def rebuild_command(profile: str, precision: str, target: str) -> str:
    return f"edge-build --profile {profile} --precision {precision} --target {target}"


def write_manifest(out_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    path = Path(out_dir) / MANIFEST
    body = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": {"machine": platform.machine(), "python": platform.python_version()}, **manifest}
    write_text_atomic(path, json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    return path


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: no build here; build it with `edge-build --profile NAME --precision int8 --target cpu`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: damaged manifest ({exc}); rebuild with edge-build") from None
    if data.get("format") != FORMAT:
        raise EngineIncompatible(f"{path}: manifest format {data.get('format')!r}, expected {FORMAT!r}; rebuild with edge-build")
    return data


def check_manifest(out_dir: str | Path, *, profile_name: str, profile_digest: str,
                   tensorrt_version: str | None = None, gpu: Mapping[str, Any] | None = None,
                   verify_files: bool = True) -> dict[str, Any]:
    """Read and check a build; raise :class:`EngineIncompatible` naming the mismatch and the rebuild command."""
    data = read_manifest(out_dir)
    cmd = data.get("rebuild") or rebuild_command(data.get("profile", {}).get("name", profile_name),
                                                 data.get("precision", "int8"), data.get("target", "cpu"))
    where = Path(out_dir) / MANIFEST
    if data.get("profile", {}).get("hash") != profile_digest or data.get("profile", {}).get("name") != profile_name:
        raise EngineIncompatible(
            f"{where}: built for profile {data.get('profile', {}).get('name')!r} "
            f"(hash {str(data.get('profile', {}).get('hash'))[:12]}), but profile {profile_name!r} is "
            f"{profile_digest[:12]} now; rebuild with: {cmd}")
    built_trt = data.get("tensorrt", {}).get("version")
    if built_trt and tensorrt_version and built_trt != tensorrt_version:
        raise EngineIncompatible(f"{where}: engines built with TensorRT {built_trt}, this machine has "
                                 f"{tensorrt_version}; rebuild with: {cmd}")
    built_gpu = data.get("gpu") or {}
    if built_gpu.get("compute_capability") and gpu and built_gpu.get("compute_capability") != gpu.get("compute_capability"):
        raise EngineIncompatible(
            f"{where}: engines built on {built_gpu.get('name')} (compute capability {built_gpu.get('compute_capability')}), "
            f"this GPU is {gpu.get('name')} ({gpu.get('compute_capability')}); rebuild with: {cmd}")
    if data.get("source_hash") and data["source_hash"] != source_hash():
        log.warning("%s: built from other lfmim-edge sources; if results look wrong, rebuild with: %s", where, cmd)
    if verify_files:
        for net, entry in data.get("networks", {}).items():
            for key in ("onnx", "fp32_onnx", "variant_onnx", "plan"):
                info = entry.get(key)
                if not info:
                    continue
                path = Path(out_dir) / info["file"]
                if not path.is_file():
                    raise EngineIncompatible(f"{where}: {net} file {info['file']} is missing; rebuild with: {cmd}")
                if sha256_file(path) != info["sha256"]:
                    raise EngineIncompatible(f"{where}: {net} file {info['file']} changed since the build "
                                             f"(SHA-256 differs); rebuild with: {cmd}")
    return data
