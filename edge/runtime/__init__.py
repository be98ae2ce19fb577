"""Runners on the run path (never imports torch): the ``Runner`` contract, ONNX Runtime and TensorRT backends,
and ``open_runner`` to pick one. Backend modules import their heavy packages only when a runner is opened."""

from edge.runtime.base import Runner, RunnerClosed, TensorSpec
from edge.runtime.factory import BACKENDS, available_backends, open_runner

__all__ = ["BACKENDS", "Runner", "RunnerClosed", "TensorSpec", "available_backends", "open_runner"]
