"""TensorRT runner and engine builder (TensorRT 10 / 11 Python API, pycuda for memory and the stream).

The runner deserializes a plan, keeps one execution context, one CUDA stream, one device buffer per I/O tensor
(grown when a dynamic shape needs more) and page-locked host buffers for the copies. ``build_engine`` turns an
ONNX file into a plan with a strongly typed network (precision lives in the graph: FP16 casts or Q/DQ nodes),
an optimization profile for dynamic inputs, a reusable timing cache and a progress bar.

``tensorrt`` and ``pycuda`` are imported only when used; without them a :class:`MissingDependency` names the
install command (on Jetson, TensorRT comes with JetPack).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edge._lazy import lazy_import
from edge.errors import BackendUnavailable, EngineIncompatible, InputError, MissingDependency
from edge.runtime.base import Runner, TensorSpec

log = logging.getLogger("edge")

JETSON_HINT = "on Jetson, TensorRT comes with JetPack (apt install nvidia-jetpack), not from pip"
MIN_TRT_MAJOR = 10

Shape = Sequence[int]
#: input name -> (min, opt, max) shapes of the one optimization profile
Profiles = Mapping[str, tuple[Shape, Shape, Shape]]


def _tensorrt():
    try:
        trt = lazy_import("tensorrt", purpose="TensorRT engines")
    except MissingDependency as exc:
        raise MissingDependency(f"{exc} ({JETSON_HINT})") from exc.__cause__
    major = int(trt.__version__.split(".")[0])
    if major < MIN_TRT_MAJOR:
        raise BackendUnavailable(
            f"TensorRT {trt.__version__} is too old: the run path needs TensorRT {MIN_TRT_MAJOR} or newer "
            f"(pip install 'lfmim-edge[trt]'; {JETSON_HINT})"
        )
    return trt


def _pycuda_driver():
    return lazy_import("pycuda.driver", purpose="TensorRT device buffers")


def _trt_logger(trt):
    """A ``trt.ILogger`` that forwards TensorRT's messages to the ``edge`` logger and remembers the errors."""

    class _Logger(trt.ILogger):
        levels = {
            trt.ILogger.Severity.INTERNAL_ERROR: logging.CRITICAL,
            trt.ILogger.Severity.ERROR: logging.ERROR,
            trt.ILogger.Severity.WARNING: logging.WARNING,
            trt.ILogger.Severity.INFO: logging.DEBUG,
        }

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:  # called by TensorRT, possibly from its threads
            level = self.levels.get(severity)
            if level is None:  # VERBOSE: thousands of lines per build
                return
            if level >= logging.ERROR:
                self.errors.append(str(msg))
            log.log(level, "TensorRT: %s", msg)

    return _Logger()


def _np_dtype(trt, name: str, trt_dtype) -> np.dtype:
    try:
        return np.dtype(trt.nptype(trt_dtype))
    except TypeError as exc:
        raise EngineIncompatible(
            f"tensor {name!r} has TensorRT type {trt_dtype}, which numpy cannot hold; export the model with "
            "float32/float16/int32/int64/int8/uint8/bool inputs and outputs (keep_io_types=True) and rebuild"
        ) from exc


class _Buffer:
    """One tensor's device allocation and page-locked host staging area, grown on demand."""

    def __init__(self, cuda, dtype: np.dtype) -> None:
        self._cuda = cuda
        self.dtype = dtype
        self.capacity = 0
        self.device = None
        self.host = None

    def ensure(self, shape: tuple[int, ...]) -> np.ndarray:
        """Make room for ``shape`` and return the page-locked host array of that shape."""
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize, 1)
        if nbytes > self.capacity:
            self.free()
            self.device = self._cuda.mem_alloc(nbytes)
            self.host = self._cuda.pagelocked_empty(nbytes, np.uint8)
            self.capacity = nbytes
        count = int(np.prod(shape, dtype=np.int64))
        return self.host[: count * self.dtype.itemsize].view(self.dtype).reshape(shape)

    def free(self) -> None:
        if self.device is not None:
            self.device.free()
        if self.host is not None and hasattr(self.host.base, "free"):
            self.host.base.free()  # the page-locked allocation behind the array
        self.device = self.host = None
        self.capacity = 0


class TrtRunner(Runner):
    """Runs a serialized TensorRT engine (``.plan`` / ``.engine``) on CUDA device ``device``.

    Not thread-safe by design of TensorRT contexts; calls to ``infer`` are serialised with a lock. The CUDA
    primary context is pushed around every call, so the runner may be used from any thread.
    """

    backend = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike[str], *, device: int = 0) -> None:
        super().__init__()
        self._trt = trt = _tensorrt()
        self._cuda = cuda = _pycuda_driver()
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise InputError(f"TensorRT engine not found: {self.path}; build it on this device first (edge-build)")
        self.device = device
        self._lock = threading.Lock()
        self._buffers: dict[str, _Buffer] = {}
        try:
            cuda.init()
            count = cuda.Device.count()
        except cuda.Error as exc:
            raise BackendUnavailable(f"CUDA could not start ({exc}); check the NVIDIA driver") from exc
        if not 0 <= device < count:
            raise BackendUnavailable(f"CUDA device {device} requested, but this machine has {count} device(s)")
        self._context_handle = cuda.Device(device).retain_primary_context()
        self._context_handle.push()
        try:
            self._load(trt, cuda)
        except BaseException:
            self._teardown()
            cuda.Context.pop()
            self._context_handle.detach()
            raise
        cuda.Context.pop()

    def _load(self, trt, cuda) -> None:
        self._logger = _trt_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            detail = "; ".join(self._logger.errors[-3:]) or "no detail"
            raise EngineIncompatible(
                f"TensorRT {trt.__version__} cannot load {self.path} ({detail}); engines are tied to the TensorRT "
                "version and GPU that built them: rebuild it on this device (edge-build)"
            )
        self._context = self._engine.create_execution_context()
        self._stream = cuda.Stream()
        engine = self._engine
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = _np_dtype(trt, name, engine.get_tensor_dtype(name))
            spec = TensorSpec(name, tuple(engine.get_tensor_shape(name)), dtype)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                if engine.is_shape_inference_io(name):
                    raise EngineIncompatible(f"input {name!r} is a shape tensor, which TrtRunner does not support")
                self.inputs.append(spec)
            else:
                self.outputs.append(spec)
            self._buffers[name] = _Buffer(cuda, dtype)

    # Runner -----------------------------------------------------------------------------------------------------
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self._context_handle.push()
            try:
                return self._run(feeds)
            finally:
                self._cuda.Context.pop()

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda, context = self._cuda, self._context
        for spec in self.inputs:
            array = feeds[spec.name]
            if spec.is_dynamic:  # fixed dimensions were checked against the spec already
                self._check_profile(spec.name, array.shape)
            if not context.set_input_shape(spec.name, array.shape):
                raise InputError(f"TensorRT rejected shape {array.shape} for input {spec.name!r} ({spec})")
        unresolved = context.infer_shapes()
        if unresolved:
            raise InputError(f"TensorRT cannot infer the shapes of {list(unresolved)} from the given inputs")

        staged = {}
        for spec in self.inputs:
            host = self._buffers[spec.name].ensure(feeds[spec.name].shape)
            np.copyto(host, feeds[spec.name])
            cuda.memcpy_htod_async(self._buffers[spec.name].device, host, self._stream)
        for spec in self.outputs:
            shape = tuple(context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise EngineIncompatible(
                    f"output {spec.name!r} has a data-dependent shape {shape}, which TrtRunner does not support"
                )
            staged[spec.name] = self._buffers[spec.name].ensure(shape)
        for name, buffer in self._buffers.items():
            context.set_tensor_address(name, int(buffer.device))

        if not context.execute_async_v3(self._stream.handle):
            raise RuntimeError(f"TensorRT failed to run {self.path.name}; see the 'edge' log for TensorRT's errors")
        for name, host in staged.items():
            cuda.memcpy_dtoh_async(host, self._buffers[name].device, self._stream)
        self._stream.synchronize()
        return {name: host.copy() for name, host in staged.items()}  # staging buffers are reused next call

    def _check_profile(self, name: str, shape: tuple[int, ...]) -> None:
        """Say which dimension leaves the engine's optimization profile, and how to fix it."""
        low, _, high = self._engine.get_tensor_profile_shape(name, 0)
        for axis, (lo, got, hi) in enumerate(zip(low, shape, high)):
            if not lo <= got <= hi:
                raise InputError(
                    f"input {name!r}: dimension {axis} is {got}, but {self.path.name} was built for {lo}..{hi} "
                    f"(shape {tuple(shape)}); rebuild the engine with a wider profile (edge-build)"
                )

    def _release(self) -> None:
        self._context_handle.push()
        try:
            self._teardown()
        finally:
            self._cuda.Context.pop()
            self._context_handle.detach()

    def _teardown(self) -> None:
        """Free buffers and TensorRT objects (context, engine, runtime, in that order); the CUDA context is pushed."""
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers.clear()
        for attr in ("_context", "_engine", "_runtime", "_stream"):
            self.__dict__.pop(attr, None)

    def describe(self) -> str:
        return f"{self.path.name} on cuda:{self.device}"


# building ---------------------------------------------------------------------------------------------------------
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
    _write_atomically(engine_path, memoryview(plan))
    if cache_path is not None:
        _write_atomically(cache_path, memoryview((config.get_timing_cache() or cache).serialize()))
    log.info("wrote %s (%d bytes)", engine_path, plan.nbytes)
    return engine_path


def _write_atomically(path: Path, data: memoryview) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def tensorrt_version() -> str:
    """The installed TensorRT's version (MissingDependency with the install hint when absent)."""
    return str(_tensorrt().__version__)


def device_info(device: int = 0) -> dict[str, str]:
    """Name and compute capability of a CUDA device, as recorded in build manifests."""
    cuda = _pycuda_driver()
    cuda.init()
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return {"name": str(dev.name()), "compute_capability": f"{major}.{minor}"}
