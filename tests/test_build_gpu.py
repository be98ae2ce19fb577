"""edge-build --target gpu on a real NVIDIA GPU: TensorRT engines for every network of the tiny profile at each
precision, parity of each engine with ONNX Runtime, and the engine round trip through the manifest.

Marked ``gpu``: skipped where CUDA, tensorrt or pycuda are absent (never faked).  Tolerances, on the cosine of each
output with ONNX Runtime's FP32 output over random inputs: FP32 engines 0.9999 (TF32 off), FP16 0.999, INT8 0.98.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.build.builder import BuildOptions, build
from edge.runtime.manifest import check_manifest, read_manifest
from edge.errors import EngineIncompatible
from edge.profile import load_profile, profile_hash
from edge.runtime.engines import open_engines
from edge.runtime.onnxruntime_runner import OrtRunner

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'lfmim-edge[trt]')")
pytest.importorskip("pycuda.driver", reason="pycuda is not installed (pip install 'lfmim-edge[trt]')")

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny.toml"
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98}


def _feeds(runner, rng):
    feeds = {}
    for spec in runner.inputs:
        shape = [1 if not isinstance(d, int) else d for d in spec.shape]
        if spec.name == "image":  # P-Net: a 48 x 64 image
            shape = [1, 3, 48, 64] if len(shape) == 4 and shape[2] == 1 else shape
        if np.dtype(spec.dtype).kind == "i":
            feeds[spec.name] = (np.ones(shape) if spec.name == "attention_mask" else
                                rng.integers(5, 100, size=shape)).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


@pytest.fixture(scope="module", params=["fp32", "fp16", "int8"])
def gpu_build(request, tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp(f"gpu-{request.param}")
    path = build(BuildOptions(profile=str(TINY), precision=request.param, target="gpu", out_root=str(root),
                              random_weights=True, calibration_data=str(shared_data), progress=False))
    return request.param, path.parent


def test_every_network_has_an_engine_that_agrees_with_onnxruntime(gpu_build):
    precision, folder = gpu_build
    m = read_manifest(folder)
    assert m["tensorrt"]["built"] is True and m["gpu"]["compute_capability"]
    rng = np.random.default_rng(0)
    with open_engines(TINY, target="gpu", directory=folder) as engines:
        assert set(engines.backends.values()) == {"tensorrt"}, engines.backends
        for name, runner in engines.runners.items():
            reference = OrtRunner(folder / m["networks"][name]["fp32_onnx"]["file"])
            feeds = _feeds(reference, rng)
            want, got = reference.infer(feeds), runner.infer(feeds)
            for out, ref in want.items():
                a, b = ref.astype(np.float64).ravel(), got[out].astype(np.float64).ravel()
                cos = a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)
                assert cos >= MIN_COSINE[precision], (name, out, cos)
            reference.close()


def test_engines_round_trip_through_the_manifest(gpu_build):
    _, folder = gpu_build
    m = read_manifest(folder)
    digest = profile_hash(load_profile(TINY))
    check_manifest(folder, profile_name="tiny", profile_digest=digest, tensorrt_version=m["tensorrt"]["version"],
                   gpu=m["gpu"])
    other = {"name": "another GPU", "compute_capability": "1.0"}
    with pytest.raises(EngineIncompatible, match="rebuild with: edge-build"):
        check_manifest(folder, profile_name="tiny", profile_digest=digest, gpu=other)
