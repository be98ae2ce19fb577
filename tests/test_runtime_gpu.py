"""TensorRT on a real GPU: build engines from the tiny ONNX models with ``build_engine`` and check that
``TrtRunner`` agrees with ONNX Runtime. Marked ``gpu``: skipped where CUDA (or tensorrt / pycuda) is absent.

FP32 tolerance: TF32 is disabled at build time, so only kernel summation order differs (atol 1e-5, rtol 1e-4).
FP16 (precision from the graph, strongly typed): atol / rtol 1e-2, like the shared contract suite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.errors import EngineIncompatible, InputError
from edge.runtime import RunnerClosed, available_backends, open_runner
from edge.runtime.onnxruntime_runner import OrtRunner

pytestmark = pytest.mark.gpu

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'lfmim-edge[trt]')")
pytest.importorskip("pycuda.driver", reason="pycuda is not installed (pip install 'lfmim-edge[trt]')")

from edge.build.tensorrt_engine import build_engine  # noqa: E402
from edge.runtime.tensorrt_runner import TrtRunner  # noqa: E402
from test_runtime import MAX_BATCH, MODELS  # noqa: E402  (the tiny models shared with the contract suite)

FP32_TOL = {"atol": 1e-5, "rtol": 1e-4}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (onnx, plan), every engine built once with a shared timing cache."""
    folder = tmp_path_factory.mktemp("trt")
    cache = folder / "timing.cache"
    out = {}
    for name, model in MODELS.items():
        onnx_path = model.build(folder / f"{name}.onnx")
        plan = build_engine(onnx_path, folder / f"{name}.plan", timing_cache=cache, profiles=model.profiles(),
                            workspace_mb=256, progress=False)
        out[name] = (onnx_path, plan)
    return out


def test_build_writes_plan_and_timing_cache(built, tmp_path):
    onnx_path, plan = built["mlp"]
    assert plan.is_file() and plan.stat().st_size > 0
    cache = plan.parent / "timing.cache"
    assert cache.is_file() and cache.stat().st_size > 0
    # a second build reads the cache back (and shows the progress bars)
    again = build_engine(onnx_path, tmp_path / "again.plan", timing_cache=cache, profiles=MODELS["mlp"].profiles())
    assert again.is_file()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trt_matches_onnxruntime(built, name):
    model = MODELS[name]
    onnx_path, plan = built[name]
    tol = FP32_TOL if name != "mlp16" else {"atol": model.atol, "rtol": model.rtol}
    with TrtRunner(plan) as engine, OrtRunner(onnx_path) as reference:
        assert [s.name for s in engine.inputs] == [s.name for s in reference.inputs]
        assert [s.dtype for s in engine.outputs] == [s.dtype for s in reference.outputs]
        for batch in (1, 7, MAX_BATCH, 2):
            feeds = model.feeds(batch, seed=10 + batch)
            got, want = engine.infer(feeds), reference.infer(feeds)
            for out in want:
                assert got[out].shape == want[out].shape and got[out].dtype == want[out].dtype
                np.testing.assert_allclose(got[out].astype(np.float32), want[out].astype(np.float32), **tol)


def test_batch_outside_the_profile_is_a_clear_error(built):
    with TrtRunner(built["mlp"][1]) as engine:
        with pytest.raises(InputError, match=rf"dimension 0 is {MAX_BATCH + 1}, but .* was built for 1\.\.{MAX_BATCH}"):
            engine.infer(MODELS["mlp"].feeds(MAX_BATCH + 1))


def test_factory_opens_plans_with_tensorrt(built):
    runner = open_runner(built["two_io"][1])
    assert isinstance(runner, TrtRunner) and runner.backend == "tensorrt"
    runner.close()
    with pytest.raises(RunnerClosed):
        runner.infer(MODELS["two_io"].feeds(1))
    assert available_backends()["tensorrt"].startswith("available (TensorRT")


def test_dynamic_input_without_profile_is_refused(built, tmp_path):
    with pytest.raises(InputError, match=r"dynamic input\(s\) x.* need min/opt/max shapes"):
        build_engine(built["mlp"][0], tmp_path / "x.plan", progress=False)
    with pytest.raises(InputError, match=r"unknown input\(s\) \['nope'\]"):
        build_engine(built["mlp"][0], tmp_path / "x.plan", profiles={"nope": ((1,), (1,), (1,))}, progress=False)


def test_corrupt_engine_names_the_rebuild(tmp_path):
    plan = tmp_path / "corrupt.plan"
    plan.write_bytes(b"\x00" * 1024)
    with pytest.raises(EngineIncompatible, match=r"cannot load .*corrupt\.plan.*rebuild it on this device"):
        TrtRunner(plan)
