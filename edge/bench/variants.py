"""What can be measured for one network of a build here: the PyTorch baseline, ONNX Runtime (CPU, and CUDA when its
provider is present) on the FP32 file and the build's chosen variant, and TensorRT plans when TensorRT runs here."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger("edge")


@dataclass(frozen=True)
class Variant:
    """One way to run one network: backend, device, precision and the artifact (None for the torch baseline)."""

    network: str
    backend: str  # "torch", "onnxruntime" or "tensorrt"
    device: str  # "cpu" or "cuda"
    precision: str
    file: str | None = None
    sha256: str | None = None

    @property
    def baseline(self) -> bool:
        return self.backend == "torch"

    @property
    def label(self) -> str:
        return f"{self.network} {self.backend}-{self.device} {self.precision}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "baseline": self.baseline}


@dataclass(frozen=True)
class Capabilities:
    """What this machine can run: ONNX Runtime on CUDA, TensorRT, torch on CUDA."""

    ort_cuda: bool
    tensorrt: bool
    torch_cuda: bool

    @classmethod
    def probe(cls) -> "Capabilities":
        from edge.runtime.factory import available_backends

        found = available_backends()
        return cls(ort_cuda=found.get("onnxruntime-cuda", "").startswith("available"),
                   tensorrt=found.get("tensorrt", "").startswith("available"), torch_cuda=_torch_cuda())


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def plan_variants(network: str, entry: Mapping[str, Any], caps: Capabilities, *, baseline: bool) -> list[Variant]:
    """The variants of ``network`` (its manifest ``entry``) to measure, baselines first."""
    fp32, chosen = entry.get("fp32_onnx") or entry["onnx"], entry["onnx"]
    onnx_files = [("fp32", fp32)]
    if chosen["file"] != fp32["file"]:
        onnx_files.append((entry.get("precision", "variant"), chosen))
    devices = ["cpu"] + (["cuda"] if caps.ort_cuda else [])
    plan = entry.get("plan") if caps.tensorrt else None
    out: list[Variant] = []
    if baseline:
        out.append(Variant(network, "torch", "cpu", "fp32"))
        if caps.torch_cuda and (caps.ort_cuda or plan):
            out.append(Variant(network, "torch", "cuda", "fp32"))
    for device in devices:
        out += [Variant(network, "onnxruntime", device, p, f["file"], f.get("sha256")) for p, f in onnx_files]
    if plan:
        out.append(Variant(network, "tensorrt", "cuda", entry.get("precision", "fp32"), plan["file"],
                           plan.get("sha256")))
    return out


def check_file(directory: Path, variant: Variant) -> Path:
    """The variant's artifact path, after checking it is the file the build wrote (raises EngineIncompatible)."""
    from edge.fileio import sha256_file
    from edge.errors import EngineIncompatible

    path = directory / str(variant.file)
    if not path.is_file():
        raise EngineIncompatible(f"{path} is missing; rebuild the engines (see the manifest's rebuild command)")
    if variant.sha256 and sha256_file(path) != variant.sha256:
        raise EngineIncompatible(f"{path} changed since the build (SHA-256 differs from the manifest); rebuild it")
    return path
