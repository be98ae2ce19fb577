"""TensorRT runner (TensorRT 10 / 11 Python API, pycuda for memory and the stream): run side.

The runner deserializes a plan, keeps one execution context, one CUDA stream, one device buffer per I/O tensor
(grown when a dynamic shape needs more) and page-locked host buffers for the copies.  Building plans is the build
side's job (:mod:`edge.build.tensorrt_engine`), as Polygraphy keeps its loaders apart from its runners.

``tensorrt`` and ``pycuda`` are imported only when used; without them a :class:`MissingDependency` names the
install command (on Jetson, TensorRT comes with JetPack).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from edge._lazy import lazy_import
from edge.errors import BackendUnavailable, EngineIncompatible, InputError, MissingDependency
from edge.runtime.base import Runner, TensorSpec

log = logging.getLogger("edge")

JETSON_HINT = "on Jetson, TensorRT comes with JetPack (apt install nvidia-jetpack), not from pip"
MIN_TRT_MAJOR = 10

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
