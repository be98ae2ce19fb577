"""Which variant of a network a build keeps on this machine: the fastest that passes the fidelity gate.

A quantized variant is kept only if it passes the gate *and* is faster than FP32 here: both are timed once during the
build, batch 1, on the same held-out feed, interleaved run by run so that both see the same load, and the variant
must take at most :data:`MAX_TIME_RATIO` of FP32's median time (a margin for timing noise: an approximation that
does not save at least 5 % is not worth its error).  Both timings go into the manifest.  For GPU targets the variants
are made for TensorRT, so a CPU timing says nothing about them and only the gate decides.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

log = logging.getLogger("edge")

#: A variant is kept when its median time is at most this fraction of FP32's.
MAX_TIME_RATIO = 0.95
MIN_RUNS = 12
BUDGET_S = 1.5


def time_pair(fp32_path: Path, variant_path: Path, feed: Mapping[str, np.ndarray], *, threads: int | None = None,
              min_runs: int = MIN_RUNS, budget_s: float = BUDGET_S) -> dict[str, Any]:
    """Median batch-1 latency (ms) of both files on ONNX Runtime's CPU provider, interleaved, after a warm-up."""
    from edge.runtime.onnxruntime_runner import OrtRunner

    batch1 = {k: np.ascontiguousarray(v[:1]) for k, v in feed.items()}
    times: dict[str, list[float]] = {"fp32": [], "variant": []}
    with OrtRunner(fp32_path, threads=threads) as a, OrtRunner(variant_path, threads=threads) as b:
        runners = {"fp32": a, "variant": b}
        for runner in runners.values():  # warm-up: first runs allocate and pick kernels
            for _ in range(3):
                runner.infer(batch1)
        started = time.perf_counter()
        while len(times["fp32"]) < min_runs or (time.perf_counter() - started < budget_s
                                                and len(times["fp32"]) < 200):
            for key, runner in runners.items():
                t0 = time.perf_counter()
                runner.infer(batch1)
                times[key].append((time.perf_counter() - t0) * 1e3)
    fp32_ms, variant_ms = (float(np.median(times[k])) for k in ("fp32", "variant"))
    return {"fp32_ms": round(fp32_ms, 4), "variant_ms": round(variant_ms, 4), "runs": len(times["fp32"]),
            "ratio": round(variant_ms / fp32_ms, 4) if fp32_ms > 0 else None, "threads": threads}


@dataclass(frozen=True)
class Decision:
    keep: str  # "variant" or "fp32"
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"kept": self.keep, "reason": self.reason}


def decide(network: str, precision: str, *, passed: bool | None, timing: dict[str, Any] | None,
           fallback: bool, forced: bool = False) -> Decision:
    """Keep the ``precision`` variant or FP32.  ``passed`` is the gate's verdict (None: no gate ran; a failed gate
    reaches here only with ``fallback`` or ``forced``); ``timing`` is :func:`time_pair`'s (None: not timed)."""
    if passed is False and not forced:
        return Decision("fp32", f"{precision} failed the fidelity gate on this machine; FP32 kept (fallback)")
    if timing is not None and timing.get("ratio") is not None and timing["ratio"] > MAX_TIME_RATIO:
        return Decision("fp32", f"{precision} is not faster than FP32 on this machine ({timing['variant_ms']:.3f} "
                                f"vs {timing['fp32_ms']:.3f} ms, batch 1); FP32 kept")
    why = "passed the fidelity gate" if passed else ("kept despite the gate (--force)" if forced else "no gate ran")
    speed = f", {timing['variant_ms']:.3f} vs {timing['fp32_ms']:.3f} ms FP32" if timing else ""
    return Decision("variant", f"{precision}: {why}{speed}")
