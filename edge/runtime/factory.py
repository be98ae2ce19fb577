"""Choose and open a runner for an artifact: by its file type, the requested device and what is installed.

Backends live in one registry (:data:`BACKENDS`): each names the artifact suffixes it runs, how to open one
and how to tell whether it can run here. Every fallback is logged on the ``edge`` logger with its reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge._lazy import lazy_import
from edge.errors import EdgeError, InputError
from edge.runtime.base import Runner

log = logging.getLogger("edge")

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Backend:
    """One inference backend: what it runs and how to open it."""

    name: str
    suffixes: tuple[str, ...]
    devices: tuple[str, ...]
    open: Callable[..., Runner]  # (path, *, device, threads, fallback) -> Runner
    probe: Callable[[], dict[str, str]]  # variant name -> "available ..." / "unavailable: why"


# ONNX Runtime --------------------------------------------------------------------------------------------------------
def _open_onnxruntime(path: Path, *, device: str, threads: int | None, fallback: bool) -> Runner:
    from edge.runtime.onnxruntime_runner import OrtRunner

    return OrtRunner(path, providers=device, threads=threads, fallback=fallback)


def _probe_onnxruntime() -> dict[str, str]:
    from edge.runtime.onnxruntime_runner import PROVIDER_ALIASES

    try:
        ort = lazy_import("onnxruntime", purpose="running ONNX models")
    except EdgeError as exc:
        return {f"onnxruntime-{alias}": f"unavailable: {exc}" for alias in PROVIDER_ALIASES}
    present = ort.get_available_providers()
    report = {}
    for alias, provider in PROVIDER_ALIASES.items():
        if provider in present:
            report[f"onnxruntime-{alias}"] = f"available (onnxruntime {ort.__version__}, {provider})"
        else:
            hint = "install onnxruntime-gpu with a matching CUDA" if alias != "cpu" else "reinstall onnxruntime"
            report[f"onnxruntime-{alias}"] = (
                f"unavailable: onnxruntime {ort.__version__} offers {', '.join(present)}; {hint}"
            )
    return report


# TensorRT ------------------------------------------------------------------------------------------------------------
def _open_tensorrt(path: Path, *, device: str, threads: int | None, fallback: bool) -> Runner:
    from edge.runtime.tensorrt_runner import TrtRunner

    if threads is not None:
        log.info("threads=%s does not apply to TensorRT engines; ignored", threads)
    return TrtRunner(path, device=0)


def _probe_tensorrt() -> dict[str, str]:
    from edge.runtime.tensorrt_runner import _pycuda_driver, _tensorrt

    try:
        trt = _tensorrt()
        cuda = _pycuda_driver()
    except EdgeError as exc:
        return {"tensorrt": f"unavailable: {exc}"}
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            return {"tensorrt": "unavailable: no CUDA device found"}
        gpu = cuda.Device(0).name()
    except cuda.Error as exc:  # no driver, driver too old, no device
        return {"tensorrt": f"unavailable: CUDA could not start ({exc})"}
    return {"tensorrt": f"available (TensorRT {trt.__version__}, {gpu})"}


#: the registry: backend name -> Backend
BACKENDS: dict[str, Backend] = {
    "onnxruntime": Backend("onnxruntime", (".onnx",), ("cpu", "cuda"), _open_onnxruntime, _probe_onnxruntime),
    "tensorrt": Backend("tensorrt", (".plan", ".engine"), ("cuda",), _open_tensorrt, _probe_tensorrt),
}


def _backend_for_suffix(path: Path) -> Backend:
    suffix = path.suffix.lower()
    for backend in BACKENDS.values():
        if suffix in backend.suffixes:
            return backend
    known = ", ".join(f"{s} ({b.name})" for b in BACKENDS.values() for s in b.suffixes)
    raise InputError(f"cannot tell how to run {path.name!r}: its suffix {suffix or '(none)'} is none of {known}")


def open_runner(
    artifact_path: str | os.PathLike[str],
    *,
    backend: str = "auto",
    device: str | None = None,
    threads: int | None = None,
    fallback: bool = False,
) -> Runner:
    """Open ``artifact_path`` with the backend that runs it and return a ready :class:`Runner`.

    ``backend``: ``'auto'`` (by suffix: ``.onnx`` -> ONNX Runtime, ``.plan`` / ``.engine`` -> TensorRT) or a name
    from :data:`BACKENDS`, which must agree with the artifact. ``device``: ``'cpu'`` or ``'cuda'``; ``None`` picks
    the artifact's natural device (CPU for ONNX, CUDA for engines). ``threads`` sets ONNX Runtime's intra-op
    threads. ``fallback=True`` turns an unavailable GPU into a logged warning and a CPU runner where one can run
    the artifact; otherwise it raises :class:`edge.errors.BackendUnavailable`.
    """
    path = Path(artifact_path)
    if backend != "auto" and backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose 'auto' or one of {sorted(BACKENDS)}")
    if device is not None and device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose one of {list(DEVICES)}")
    chosen = _backend_for_suffix(path)
    if backend not in ("auto", chosen.name):
        raise InputError(
            f"{path.name} is a {path.suffix} file, which runs on {chosen.name}, not {backend}; "
            + ("build a TensorRT engine from it first (edge-build --target gpu), or use device='cuda' with onnxruntime"
               if backend == "tensorrt" else "pass the .onnx file the engine was built from")
        )
    device = device or chosen.devices[0]
    if device not in chosen.devices:
        raise InputError(f"{chosen.name} runs {path.suffix} files on {list(chosen.devices)}, not on {device!r}")
    if not path.is_file():
        raise InputError(f"model file not found: {path}; check the path or build it first (edge-build)")
    log.debug("opening %s with %s on %s", path, chosen.name, device)
    return chosen.open(path, device=device, threads=threads, fallback=fallback)


def available_backends() -> dict[str, str]:
    """Each backend variant on this machine -> ``'available (...)'`` or ``'unavailable: why'``."""
    report: dict[str, str] = {}
    for backend in BACKENDS.values():
        report.update(backend.probe())
    return report


__all__ = ["BACKENDS", "Backend", "available_backends", "open_runner"]
