"""What a benchmark ran on (CPU, cores, GPU, package versions) and how much memory it took.

Memory is the process's resident set (Linux ``/proc/self/status``): :class:`PeakRss` resets the kernel's high-water
mark (``VmHWM``, via ``/proc/self/clear_refs``) when it can, so each measurement sees its own peak; where that is not
allowed it falls back to ``resource.getrusage``'s lifetime peak, which then only shows growth.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import platform
import resource
from pathlib import Path
from typing import Any

log = logging.getLogger("edge")

#: packages whose versions go into a benchmark's record
PACKAGES = ("lfmim-edge", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "transformers", "tensorrt",
            "pycuda")
_MB = 1024 * 1024


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The first CUDA device's name when torch sees one (None otherwise; never starts CUDA without torch)."""
    try:
        import torch
    except ImportError:
        return None
    try:
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except RuntimeError:
        return None


def package_versions() -> dict[str, str | None]:
    from edge.runtime.manifest import package_versions as versions

    return versions(PACKAGES)


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores, usable cores, load average (other work competing for the cores), GPU, OS, Python
    and package versions."""
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable, "load_average": load, "gpu": gpu_name(),
            "machine": platform.machine(), "system": platform.platform(), "python": platform.python_version(),
            "packages": package_versions()}


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so the RSS measured next
    is not inflated by memory a previous model left in the allocator's free lists."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_mb() -> float:
    """The process's resident set size now, in MiB."""
    now = _status_mb("VmRSS")
    return now if now is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_high_water_mark() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
        return True
    except OSError:
        return False


class PeakRss:
    """Peak resident memory over a block, in MiB, relative to a reference level (the RSS before a model was loaded).

    ``with PeakRss(reference) as peak: ...`` then ``peak.mb`` (peak RSS minus ``reference``) and ``peak.exact``
    (False when the high-water mark could not be reset and the lifetime peak was used).
    """

    def __init__(self, reference_mb: float) -> None:
        self.reference_mb = reference_mb
        self.mb: float | None = None
        self.exact = False

    def __enter__(self) -> "PeakRss":
        self.exact = _reset_high_water_mark()
        return self

    def __exit__(self, *exc: object) -> None:
        peak = _status_mb("VmHWM") if self.exact else None
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        self.mb = max(0.0, peak - self.reference_mb)


class CudaMemory:
    """Device memory over a block, in MiB: torch's allocator peak when torch drives the GPU, else the change in used
    device memory (``cudaMemGetInfo``) from ``reference_used_mb``. ``mb`` stays None without torch + CUDA."""

    def __init__(self, reference_used_mb: float | None = None, *, torch_allocator: bool = False) -> None:
        self.reference_used_mb = reference_used_mb
        self.torch_allocator = torch_allocator
        self.mb: float | None = None

    @staticmethod
    def used_mb() -> float | None:
        try:
            import torch
        except ImportError:
            return None
        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
        return (total - free) / _MB

    def __enter__(self) -> "CudaMemory":
        if self.torch_allocator:
            import torch

            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.torch_allocator:
            import torch

            self.mb = torch.cuda.max_memory_allocated() / _MB
            return
        used = self.used_mb()
        if used is not None and self.reference_used_mb is not None:
            self.mb = max(0.0, used - self.reference_used_mb)
