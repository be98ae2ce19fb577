"""Lazy imports of heavy, optional packages with an install hint (the run path never imports torch)."""

from __future__ import annotations

import importlib
from types import ModuleType

from edge.errors import MissingDependency

#: module name -> (pip requirement, lfmim-edge extra that brings it)
_HINTS = {
    "torch": ("torch", "train"),
    "safetensors": ("safetensors", "cpu"),
    "matplotlib": ("matplotlib", "train"),
    "onnx": ("onnx", "cpu"),
    "tokenizers": ("tokenizers", "cpu"),
    "onnxruntime": ("onnxruntime", "cpu"),
    "transformers": ("transformers", "build"),
    "tensorrt": ("tensorrt", "trt"),
    "pycuda": ("pycuda", "trt"),
    "cv2": ("opencv-python-headless", "cpu"),
    "sounddevice": ("sounddevice", "cpu"),
    "faster_whisper": ("faster-whisper", "whisper"),
    "ctranslate2": ("ctranslate2", "whisper"),
    "opencc": ("opencc", "zh-scoring"),
}


def lazy_import(name: str, *, purpose: str = "") -> ModuleType:
    """Import ``name`` or raise :class:`MissingDependency` with the exact install command."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.split(".")[0]
        requirement, extra = _HINTS.get(top, (top, None))
        why = f" (needed for {purpose})" if purpose else ""
        hint = f"pip install 'lfmim-edge[{extra}]'" if extra else f"pip install {requirement}"
        raise MissingDependency(f"the package {requirement!r} is not installed{why}; install it with: {hint}") from exc
