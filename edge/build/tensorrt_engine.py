"""TensorRT engine building (build side): ONNX file -> serialized plan.

``build_engine`` turns an ONNX file into a plan with a strongly typed network (precision lives in the graph: FP16
casts or Q/DQ nodes), one optimization profile for the dynamic inputs, a reusable timing cache and a progress bar
per build phase.  Running plans is :class:`edge.runtime.tensorrt_runner.TrtRunner`'s job (run side).

Written against NVIDIA's documented TensorRT 10 / 11 Python API; not yet verified on hardware in this project's
workplace (see the README's GPU section and ``edge-run --check`` on the device).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from edge.errors import EngineIncompatible, InputError
from edge.fileio import write_bytes_atomic
from edge.runtime.tensorrt_runner import _tensorrt, _trt_logger

log = logging.getLogger("edge")

Shape = Sequence[int]
#: input name -> (min, opt, max) shapes of the one optimization profile
Profiles = Mapping[str, tuple[Shape, Shape, Shape]]


def _progress_monitor(trt):
    """An ``IProgressMonitor`` that draws one tqdm bar per (nested) build phase, or None where unsupported."""
    if not hasattr(trt, "IProgressMonitor"):
        return None
    from tqdm.auto import tqdm

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._bars: dict[str, tqdm] = {}
            self._lock = threading.Lock()  # TensorRT may call from several threads

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            with self._lock:
                depth = len(self._bars)
                self._bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=depth, leave=depth == 0)

        def step_complete(self, phase_name, step) -> bool:
            with self._lock:
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
            return True  # False would cancel the build

        def phase_finish(self, phase_name) -> None:
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return _Monitor()


def _network_inputs(network) -> dict[str, tuple[int, ...]]:
    return {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}


def _add_profile(builder, config, network, profiles: Profiles | None) -> None:
    inputs = _network_inputs(network)
    profiles = dict(profiles or {})
    unknown = sorted(set(profiles) - set(inputs))
    if unknown:
        raise InputError(f"profiles name unknown input(s) {unknown}; the network's inputs are {sorted(inputs)}")
    dynamic = {name: shape for name, shape in inputs.items() if any(d < 0 for d in shape)}
    lacking = sorted(set(dynamic) - set(profiles))
    if lacking:
        shapes = ", ".join(f"{n}{dynamic[n]}" for n in lacking)
        raise InputError(
            f"dynamic input(s) {shapes} need min/opt/max shapes: pass profiles={{name: (min, opt, max)}}"
        )
    if not profiles:
        return
    profile = builder.create_optimization_profile()
    for name, shapes in profiles.items():
        if len(shapes) != 3:
            raise InputError(f"profile of input {name!r} must be (min, opt, max) shapes, got {shapes!r}")
        low, opt, high = (tuple(int(d) for d in s) for s in shapes)
        declared = inputs[name]
        if not len(low) == len(opt) == len(high) == len(declared):
            raise InputError(f"profile of input {name!r} must have rank {len(declared)} like {declared}, got {shapes!r}")
        for axis, fixed in enumerate(declared):
            if not low[axis] <= opt[axis] <= high[axis] or (fixed >= 0 and not low[axis] == high[axis] == fixed):
                raise InputError(
                    f"profile of input {name!r}, dimension {axis}: need min <= opt <= max and fixed sizes kept "
                    f"({declared}), got {shapes!r}"
                )
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)


def _load_timing_cache(config, path: Path | None):
    """Attach the timing cache stored at ``path`` (or a fresh one) to ``config`` and return it (keep it alive)."""
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("timing cache %s is unreadable or from another device / TensorRT; starting a fresh one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    *,
    timing_cache: str | os.PathLike[str] | None = None,
    profiles: Profiles | None = None,
    workspace_mb: int = 1024,
    tf32: bool = False,
    progress: bool = True,
) -> Path:
    """Build a TensorRT plan from an ONNX file and write it to ``engine_path`` (returned).

    The network is strongly typed: precision comes from the ONNX graph (FP16 casts, Q/DQ nodes), the same on
    TensorRT 10 (opt-in flag) and 11 (always). ``profiles`` gives (min, opt, max) shapes for every dynamic input.
    ``timing_cache`` is read when present and written back after the build. ``tf32=False`` keeps FP32 layers in
    full FP32 (parity with ONNX Runtime); ``True`` lets TensorRT use TF32 tensor cores where the version allows.
    """
    trt = _tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise InputError(f"ONNX model not found: {onnx_path}; export it first (edge-build)")
    if not isinstance(workspace_mb, int) or workspace_mb < 1:
        raise InputError(f"workspace_mb must be a positive integer, got {workspace_mb!r}")
    cache_path = Path(timing_cache) if timing_cache is not None else None

    logger = _trt_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no detail"
        raise InputError(
            f"TensorRT {trt.__version__} cannot parse {onnx_path}:\n  {errors}\n"
            "re-export the model (opset 17 or newer, static shapes where the profile fixes them) and rebuild"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if not tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    _add_profile(builder, config, network, profiles)
    cache = _load_timing_cache(config, cache_path)  # kept referenced until the build ends
    monitor = _progress_monitor(trt) if progress else None
    if monitor is not None:
        config.progress_monitor = monitor  # must outlive the build: kept referenced by this frame

    log.info("building TensorRT %s engine from %s", trt.__version__, onnx_path)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        detail = "\n  ".join(logger.errors[-5:]) or "no detail"
        raise EngineIncompatible(f"TensorRT could not build an engine from {onnx_path}:\n  {detail}")

    engine_path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(engine_path, memoryview(plan))
    if cache_path is not None:
        write_bytes_atomic(cache_path, memoryview((config.get_timing_cache() or cache).serialize()))
    log.info("wrote %s (%d bytes)", engine_path, plan.nbytes)
    return engine_path
