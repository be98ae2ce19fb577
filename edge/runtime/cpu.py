"""What this processor offers the INT8 kernels of ONNX Runtime, and a name for its class (run side; no imports
beyond the standard library).

A build records the CPU class it was made and gated on (``manifest.json``: ``cpu``).  Opening it on a CPU of
another class re-runs its fidelity gate there (:func:`edge.runtime.engines.open_engines`), because ONNX Runtime picks
different integer kernels per class: x86 without VNNI adds pairs of u8 x s8 products in 16 bits, VNNI / AMX and
ARM64's dot-product instructions accumulate in 32 bits.
"""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

#: Flags that decide which integer (and half-precision) kernels ONNX Runtime's CPU provider runs.
X86_FLAGS = ("sse4_1", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
ARM_FLAGS = ("asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2")
_MAC_ARM = {"hw.optional.arm.FEAT_DotProd": "asimddp", "hw.optional.arm.FEAT_I8MM": "i8mm",
            "hw.optional.arm.FEAT_BF16": "bf16", "hw.optional.AdvSIMD": "asimd"}


def _linux_flags(text: str) -> tuple[str, set[str]]:
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model, flags


def _mac_flags() -> tuple[str, set[str]]:
    def sysctl(name: str) -> str:
        try:
            return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=2).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    flags = {flag for key, flag in _MAC_ARM.items() if sysctl(key) == "1"}
    flags.update(f.lower().replace(".", "_") for f in sysctl("machdep.cpu.features").split())
    flags.update(f.lower().replace(".", "_") for f in sysctl("machdep.cpu.leaf7_features").split())
    return sysctl("machdep.cpu.brand_string"), flags


def cpu_class(machine: str, flags: set[str] | frozenset[str]) -> str:
    """One name per family of integer kernels: ``x86_64-amx``, ``x86_64-avx512vnni``, ``x86_64-avxvnni``,
    ``x86_64-avx512``, ``x86_64-avx2``, ``x86_64-sse``; ``arm64-i8mm``, ``arm64-dotprod``, ``arm64-neon``."""
    m = machine.lower()
    if m in ("x86_64", "amd64", "x64", "i686", "i386"):
        for flag, name in (("amx_int8", "amx"), ("avx512_vnni", "avx512vnni"), ("avx_vnni", "avxvnni"),
                           ("avx512bw", "avx512"), ("avx2", "avx2")):
            if flag in flags:
                return f"x86_64-{name}"
        return "x86_64-sse"
    if m in ("aarch64", "arm64", "armv8l"):
        for flag, name in (("i8mm", "i8mm"), ("asimddp", "dotprod")):
            if flag in flags:
                return f"arm64-{name}"
        return "arm64-neon"
    return f"{m or 'unknown'}-generic"


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """``{"machine", "model", "features", "class"}`` of this processor (features: the kernel-relevant flags only)."""
    machine = platform.machine()
    model, flags = "", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        try:
            model, flags = _linux_flags(cpuinfo.read_text(errors="replace"))
        except OSError:
            pass
    elif platform.system() == "Darwin":
        model, flags = _mac_flags()
    relevant = sorted(f for f in flags if f in X86_FLAGS or f in ARM_FLAGS)
    return {"machine": machine, "model": model or platform.processor(), "features": relevant,
            "class": cpu_class(machine, flags)}
