"""The ``Runner`` contract shared by every inference backend, and the feed validation they all use.

A runner is loaded when it is constructed (so a bad file or a missing package fails early), runs
``infer(feeds) -> outputs`` on named numpy arrays, and is released by ``close()`` or by leaving a
``with`` block. Feeds are checked here, once, for every backend: names, rank, fixed dimensions,
agreement of named dynamic dimensions across inputs, and dtype (converted only where that is safe).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

from edge.errors import EdgeError, InputError

#: One dimension of a tensor: a fixed size, or ``None`` / a symbolic name (``"batch"``) when dynamic.
Dim = Union[int, str, None]


class RunnerClosed(EdgeError, RuntimeError):
    """``infer`` was called on a runner after ``close()`` (or after its ``with`` block ended)."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one model input or output.

    ``shape`` holds an ``int`` for a fixed dimension and ``None`` or a symbolic name for a dynamic one.
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(_normalise_dim(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_dynamic(self) -> bool:
        """Whether any dimension is only known at run time."""
        return any(not isinstance(d, int) for d in self.shape)

    def __str__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype.name}[{dims}]"


def _normalise_dim(dim: object) -> Dim:
    """Map the many spellings of a dynamic dimension (-1, '', None, 'batch') onto ``None`` or a name."""
    if dim is None or isinstance(dim, str):
        return dim or None
    size = int(dim)  # numpy / TensorRT integers
    return size if size >= 0 else None


def _convertible(given: np.dtype, expected: np.dtype, values: np.ndarray) -> bool:
    """Whether ``values`` (of dtype ``given``) may be converted to ``expected`` without surprising the caller.

    Allowed: numpy's safe casts (int8 -> float32, float16 -> float32, bool -> int64, ...); floating point to a
    narrower floating type (numpy pipelines produce float64; the model's precision is what the caller wants);
    integers to a narrower integer type when every value fits (token ids as int64 into an int32 input).
    """
    if np.can_cast(given, expected, casting="safe"):
        return True
    if given.kind == "f" and expected.kind == "f":
        return True
    if given.kind in "iu" and expected.kind in "iu":
        if values.size == 0:
            return True
        info = np.iinfo(expected)
        return bool(values.min() >= info.min and values.max() <= info.max)
    return False


def validate_feeds(specs: Sequence[TensorSpec], feeds: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Check ``feeds`` against the input ``specs`` and return contiguous arrays of the expected dtypes.

    Raises :class:`InputError` naming the input, its expected spec and what was given.
    """
    if not isinstance(feeds, Mapping):
        raise InputError(
            f"feeds must be a mapping of input name to array, got {type(feeds).__name__}; "
            f"this model takes: {', '.join(str(s) for s in specs)}"
        )
    expected_names = [s.name for s in specs]
    missing = [n for n in expected_names if n not in feeds]
    if missing:
        wanted = ", ".join(str(s) for s in specs if s.name in missing)
        raise InputError(f"missing input(s) {missing}: expected {wanted}; given: {sorted(feeds)}")
    extra = sorted(n for n in feeds if n not in expected_names)
    if extra:
        raise InputError(f"unexpected input(s) {extra}; this model takes only {expected_names}")

    checked: dict[str, np.ndarray] = {}
    named_dims: dict[str, tuple[int, str]] = {}  # symbolic dim -> (size, first input that fixed it)
    for spec in specs:
        array = _as_array(spec, feeds[spec.name])
        _check_shape(spec, array.shape, named_dims)
        checked[spec.name] = np.ascontiguousarray(_check_dtype(spec, array))
    return checked


def _as_array(spec: TensorSpec, value: object) -> np.ndarray:
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.dtype == object:
        raise InputError(f"input {spec.name!r} must be a numeric array ({spec}), got {type(value).__name__}")
    return array


def _check_shape(spec: TensorSpec, shape: tuple[int, ...], named_dims: dict[str, tuple[int, str]]) -> None:
    if len(shape) != spec.rank:
        raise InputError(
            f"input {spec.name!r} expects rank {spec.rank} ({spec}), got an array of shape {tuple(shape)}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, shape)):
        if isinstance(want, int) and want != got:
            raise InputError(
                f"input {spec.name!r}: dimension {axis} must be {want} ({spec}), got shape {tuple(shape)}"
            )
        if isinstance(want, str):
            size, owner = named_dims.setdefault(want, (got, spec.name))
            if size != got:
                raise InputError(
                    f"input {spec.name!r}: dimension {axis} ({want!r}) is {got}, but it is {size} in input "
                    f"{owner!r}; inputs sharing the dimension {want!r} must agree (shape {tuple(shape)}, {spec})"
                )


def _check_dtype(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    if array.dtype == spec.dtype:
        return array
    if not _convertible(array.dtype, spec.dtype, array):
        raise InputError(
            f"input {spec.name!r} expects {spec.dtype.name} ({spec}), got {array.dtype.name} values that cannot "
            f"be converted safely; convert them first, e.g. array.astype(np.{spec.dtype.name})"
        )
    return array.astype(spec.dtype)


class Runner(abc.ABC):
    """A loaded model that maps named numpy inputs to named numpy outputs.

    Subclasses load in ``__init__``, set ``self.inputs`` / ``self.outputs`` and implement ``_infer`` and
    ``_release``. Use it as a context manager, or call ``close()`` when done.
    """

    #: the backend's short name, as the factory's registry knows it
    backend: str = "abstract"

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def __init__(self) -> None:
        self.inputs = []
        self.outputs = []
        self._closed = False

    # life cycle -------------------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Runner:
        self._check_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the session / engine and its memory; further ``infer`` calls raise :class:`RunnerClosed`."""
        if not self._closed:
            self._closed = True
            self._release()

    def _check_open(self) -> None:
        if self._closed:
            raise RunnerClosed(f"{self!r} is closed; open a new runner (edge.runtime.factory.open_runner) to run again")

    # inference --------------------------------------------------------------------------------------------------
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on ``feeds`` (input name -> array) and return output name -> array (host memory)."""
        self._check_open()
        return self._infer(validate_feeds(self.inputs, feeds))

    @abc.abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated, contiguous feeds of the right dtypes."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Free the backend's resources (called once)."""

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.describe()} ({state})>"

    def describe(self) -> str:
        """A short description of what this runner runs and where (overridden by backends)."""
        return self.backend
