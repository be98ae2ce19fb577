"""ONNX Runtime runner: CPU by default, CUDA or TensorRT execution providers when they are really present."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge._lazy import lazy_import
from edge.errors import BackendUnavailable, InputError
from edge.runtime.base import Runner, TensorSpec

log = logging.getLogger("edge")

#: short provider names accepted by ``providers=`` -> ONNX Runtime's names
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
CPU = PROVIDER_ALIASES["cpu"]

OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}

#: ONNX Runtime's element type strings -> numpy dtypes
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def _onnxruntime():
    return lazy_import("onnxruntime", purpose="running ONNX models")


def resolve_providers(requested: str | Sequence[str] | None) -> list[str]:
    """Map ``'cpu'`` / ``'cuda'`` / ``'tensorrt'`` (or ONNX Runtime's own names) to provider names, in order."""
    if requested is None:
        requested = ["cpu"]
    elif isinstance(requested, str):
        requested = [requested]
    names = []
    for item in requested:
        name = PROVIDER_ALIASES.get(str(item).lower(), item)
        if not str(name).endswith("ExecutionProvider"):
            raise InputError(
                f"unknown execution provider {item!r}; use one of {sorted(PROVIDER_ALIASES)} "
                "or an ONNX Runtime provider name such as 'CUDAExecutionProvider'"
            )
        if name not in names:
            names.append(name)
    return names


class OrtRunner(Runner):
    """Runs an ONNX model with ``onnxruntime.InferenceSession``.

    ``providers``: ``'cpu'`` (default), ``'cuda'``, ``'tensorrt'``, or a list in order of preference; the CPU
    provider is always appended last so operators the others lack still run. A requested provider that is not
    available raises :class:`BackendUnavailable`, or with ``fallback=True`` logs a warning and is dropped.
    ``threads``: ONNX Runtime's intra-op thread count (``None``: its default, one per core).
    ``optimization``: graph optimization level, one of ``disable``, ``basic``, ``extended``, ``all``.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        providers: str | Sequence[str] | None = None,
        threads: int | None = None,
        optimization: str = "all",
        fallback: bool = False,
    ) -> None:
        super().__init__()
        ort = _onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(
                f"ONNX model not found: {self.path}; check the path, or export the model first (edge-build)"
            )
        wanted = resolve_providers(providers)
        chosen = self._available(wanted, ort.get_available_providers(), fallback)
        options = self._session_options(ort, threads, optimization)
        self._session = self._open(ort, options, chosen)
        self._check_providers_loaded(wanted, fallback)
        self.inputs = [_spec(arg) for arg in self._session.get_inputs()]
        self.outputs = [_spec(arg) for arg in self._session.get_outputs()]
        self._output_names = [spec.name for spec in self.outputs]

    # construction helpers ---------------------------------------------------------------------------------------
    @staticmethod
    def _available(wanted: list[str], available: list[str], fallback: bool) -> list[str]:
        chosen = []
        for name in wanted:
            if name in available:
                chosen.append(name)
                continue
            message = f"Requested provider {name}, but available providers are: {', '.join(available)}"
            if not fallback:
                raise BackendUnavailable(message)
            log.warning("%s; falling back to %s", message, CPU)
        if CPU not in chosen:
            chosen.append(CPU)
        return chosen

    @staticmethod
    def _session_options(ort, threads: int | None, optimization: str):
        options = ort.SessionOptions()
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise InputError(f"threads must be a positive integer or None, got {threads!r}")
            options.intra_op_num_threads = threads
        level = OPTIMIZATION_LEVELS.get(str(optimization).lower())
        if level is None:
            raise InputError(f"unknown optimization level {optimization!r}; use one of {sorted(OPTIMIZATION_LEVELS)}")
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        return options

    def _open(self, ort, options, providers: list[str]):
        # ONNX Runtime's exceptions are pybind11 classes deriving straight from Exception; catch only those.
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        errors = tuple(
            getattr(state, n) for n in ("Fail", "InvalidArgument", "InvalidProtobuf", "InvalidGraph", "NoSuchFile",
                                        "NoModel", "NotImplemented", "RuntimeException") if hasattr(state, n)
        )
        try:
            return ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except errors as exc:
            raise InputError(
                f"ONNX Runtime cannot load {self.path}: {exc}. The file is not a valid ONNX model for this "
                "ONNX Runtime version; re-export it (edge-build) or check that the download is complete"
            ) from exc

    def _check_providers_loaded(self, wanted: list[str], fallback: bool) -> None:
        """A listed provider can still fail to load (no driver, missing CUDA libraries): ORT then runs on the CPU."""
        active = self._session.get_providers()
        for name in wanted:
            if name in active:
                continue
            message = (
                f"Requested provider {name} is installed but could not be loaded (see ONNX Runtime's log); "
                f"active providers are: {', '.join(active)}"
            )
            if not fallback:
                self._session = None
                raise BackendUnavailable(message)
            log.warning("%s; falling back to %s", message, CPU)

    # Runner -----------------------------------------------------------------------------------------------------
    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses, in priority order."""
        self._check_open()
        return list(self._session.get_providers())

    @property
    def session(self):
        """The underlying ``onnxruntime.InferenceSession`` (for options and profiling)."""
        self._check_open()
        return self._session

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, values))

    def _release(self) -> None:
        self._session = None

    def describe(self) -> str:
        where = self._session.get_providers()[0] if self._session is not None else "released"
        return f"{self.path.name} on {where}"


def _spec(arg) -> TensorSpec:
    dtype = _ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise InputError(
            f"tensor {arg.name!r} has type {arg.type}, which the run path does not support; "
            f"export it as one of {sorted(_ORT_DTYPES)}"
        )
    return TensorSpec(arg.name, tuple(arg.shape), dtype)
