"""The runner contract, run against every runner this machine really has, on tiny real ONNX models.

ONNX Runtime on the CPU always runs; ONNX Runtime with CUDA and TensorRT join (marked ``gpu``) only where they
are really present. Every output is checked against numpy computing the same function.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge.errors import BackendUnavailable, InputError, MissingDependency
from edge.runtime import Runner, RunnerClosed, TensorSpec, available_backends, open_runner
from edge.runtime.base import validate_feeds
from edge.runtime.onnxruntime_runner import OrtRunner

ROOT = Path(__file__).resolve().parents[1]
OPSET = 17
MAX_BATCH = 8  # TensorRT profile: batch 1..8, optimised for 4


# tiny models ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyModel:
    """An ONNX model built with onnx.helper, the numpy function it computes, and its expected I/O specs."""

    name: str
    build: Callable[[Path], Path]
    reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    inputs: dict[str, tuple[tuple, np.dtype]]  # name -> (fixed dims after batch, dtype)
    outputs: dict[str, tuple[tuple, np.dtype]]
    atol: float = 1e-5
    rtol: float = 1e-5

    def feeds(self, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {n: rng.standard_normal((batch, *dims)).astype(dt) for n, (dims, dt) in self.inputs.items()}

    def profiles(self) -> dict[str, tuple]:
        return {n: ((1, *d), (4, *d), (MAX_BATCH, *d)) for n, (d, _) in self.inputs.items()}


def _save(graph, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-tests")
    model.ir_version = 8  # readable by every ONNX Runtime and TensorRT 10 parser we target
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


_RNG = np.random.default_rng(1234)
W32, B32 = _RNG.standard_normal((4, 3)).astype(np.float32), _RNG.standard_normal(3).astype(np.float32)
W16, B16 = W32.astype(np.float16), B32.astype(np.float16)


def _dense_relu(path: Path, weight: np.ndarray, bias: np.ndarray, elem: int) -> Path:
    from onnx import helper, numpy_helper

    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "dense_relu",
        [helper.make_tensor_value_info("x", elem, ["batch", 4])],
        [helper.make_tensor_value_info("y", elem, ["batch", 3])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    return _save(graph, path)


def _build_mlp(path: Path) -> Path:
    from onnx import TensorProto

    return _dense_relu(path, W32, B32, TensorProto.FLOAT)


def _build_mlp16(path: Path) -> Path:
    from onnx import TensorProto

    return _dense_relu(path, W16, B16, TensorProto.FLOAT16)


def _build_two_io(path: Path) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])],
        "two_io",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3]) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3]) for n in ("sum", "prod")],
    )
    return _save(graph, path)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


MODELS = {
    "mlp": TinyModel(
        "mlp", _build_mlp,
        lambda f: {"y": _relu(f["x"] @ W32 + B32)},
        {"x": ((4,), np.dtype(np.float32))}, {"y": ((3,), np.dtype(np.float32))},
    ),
    "two_io": TinyModel(
        "two_io", _build_two_io,
        lambda f: {"sum": f["a"] + f["b"], "prod": f["a"] * f["b"]},
        {"a": ((3,), np.dtype(np.float32)), "b": ((3,), np.dtype(np.float32))},
        {"sum": ((3,), np.dtype(np.float32)), "prod": ((3,), np.dtype(np.float32))},
    ),
    "mlp16": TinyModel(
        "mlp16", _build_mlp16,
        lambda f: {"y": _relu(f["x"].astype(np.float32) @ W16.astype(np.float32) + B16.astype(np.float32))},
        {"x": ((4,), np.dtype(np.float16))}, {"y": ((3,), np.dtype(np.float16))},
        atol=1e-2, rtol=1e-2,
    ),
}


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny_onnx")
    return {name: model.build(folder / f"{name}.onnx") for name, model in MODELS.items()}


# which runners this machine really has -------------------------------------------------------------------------------
@functools.cache
def ort_cuda_works() -> bool:
    """CUDA listed by onnxruntime *and* loadable: a session on it must really run on CUDA."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = _build_two_io(Path(folder) / "probe.onnx")
        session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
        return "CUDAExecutionProvider" in session.get_providers()


@functools.cache
def tensorrt_works() -> bool:
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("pycuda") is None:
        return False
    import pycuda.driver as cuda

    cuda.init()
    return cuda.Device.count() > 0


def _open_ort_cpu(path: Path, model: TinyModel, tmp: Path) -> Runner:
    return OrtRunner(path)


def _open_ort_cuda(path: Path, model: TinyModel, tmp: Path) -> Runner:
    return OrtRunner(path, providers="cuda")


def _open_trt(path: Path, model: TinyModel, tmp: Path) -> Runner:
    from edge.build.tensorrt_engine import build_engine
    from edge.runtime.tensorrt_runner import TrtRunner

    plan = build_engine(path, tmp / f"{model.name}.plan", profiles=model.profiles(), progress=False)
    return TrtRunner(plan)


RUNNERS = [
    pytest.param(("ort-cpu", _open_ort_cpu, lambda: True), id="ort-cpu"),
    pytest.param(("ort-cuda", _open_ort_cuda, ort_cuda_works), id="ort-cuda", marks=pytest.mark.gpu),
    pytest.param(("tensorrt", _open_trt, tensorrt_works), id="tensorrt", marks=pytest.mark.gpu),
]


@pytest.fixture(params=RUNNERS)
def open_model(request, onnx_files, tmp_path) -> Callable[[str], Runner]:
    """Opens one of MODELS with the runner under test; closes everything it opened at the end."""
    kind, opener, works = request.param
    if not works():
        pytest.skip(f"{kind} is not really available on this machine")
    opened: list[Runner] = []

    def _open(name: str) -> Runner:
        runner = opener(onnx_files[name], MODELS[name], tmp_path)
        opened.append(runner)
        return runner

    yield _open
    for runner in opened:
        runner.close()


# the contract --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_outputs_match_numpy_for_dynamic_batches(open_model, name):
    model = MODELS[name]
    runner = open_model(name)
    for batch in (1, 7, 2):  # grow then shrink: buffers are reused and reallocated
        feeds = model.feeds(batch, seed=batch)
        got = runner.infer(feeds)
        want = model.reference(feeds)
        assert sorted(got) == sorted(want)
        for out, value in want.items():
            assert got[out].shape == value.shape
            assert got[out].dtype == model.outputs[out][1]
            np.testing.assert_allclose(got[out].astype(np.float32), value, atol=model.atol, rtol=model.rtol)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_specs_report_names_shapes_dtypes(open_model, name):
    model = MODELS[name]
    runner = open_model(name)
    for specs, expected in ((runner.inputs, model.inputs), (runner.outputs, model.outputs)):
        assert [s.name for s in specs] == list(expected)
        for spec in specs:
            dims, dtype = expected[spec.name]
            assert isinstance(spec, TensorSpec)
            assert spec.dtype == dtype
            assert spec.rank == 1 + len(dims)
            assert not isinstance(spec.shape[0], int) and spec.is_dynamic  # the batch
            assert spec.shape[1:] == dims


def test_outputs_are_not_overwritten_by_the_next_call(open_model):
    runner = open_model("mlp")
    first = runner.infer(MODELS["mlp"].feeds(3, seed=1))["y"]
    kept = first.copy()
    runner.infer(MODELS["mlp"].feeds(3, seed=2))
    np.testing.assert_array_equal(first, kept)


def test_missing_input(open_model):
    runner = open_model("two_io")
    feeds = MODELS["two_io"].feeds(2)
    del feeds["b"]
    with pytest.raises(InputError, match=r"missing input\(s\) \['b'\]: expected b: float32\[(batch|\?), 3\]; given: \['a'\]"):
        runner.infer(feeds)


def test_unexpected_input(open_model):
    runner = open_model("mlp")
    feeds = {**MODELS["mlp"].feeds(2), "z": np.zeros((2, 4), np.float32)}
    with pytest.raises(InputError, match=r"unexpected input\(s\) \['z'\].*\['x'\]"):
        runner.infer(feeds)


def test_wrong_rank(open_model):
    runner = open_model("mlp")
    with pytest.raises(InputError, match=r"input 'x' expects rank 2 .*got an array of shape \(4,\)"):
        runner.infer({"x": np.zeros(4, np.float32)})


def test_wrong_fixed_dimension(open_model):
    runner = open_model("mlp")
    with pytest.raises(InputError, match=r"input 'x': dimension 1 must be 4 .*got shape \(2, 5\)"):
        runner.infer({"x": np.zeros((2, 5), np.float32)})


def test_dtype_that_cannot_be_converted(open_model):
    runner = open_model("mlp")
    with pytest.raises(InputError, match=r"input 'x' expects float32 .*got int64"):
        runner.infer({"x": np.ones((2, 4), np.int64)})
    with pytest.raises(InputError, match=r"input 'x' expects float32 .*got complex128"):
        runner.infer({"x": np.ones((2, 4), np.complex128)})
    with pytest.raises(InputError, match=r"input 'x' must be a numeric array"):
        runner.infer({"x": [[object()] * 4]})


def test_safe_dtypes_are_converted(open_model):
    runner = open_model("mlp")
    x64 = MODELS["mlp"].feeds(2)["x"].astype(np.float64)
    want = runner.infer({"x": x64.astype(np.float32)})["y"]
    np.testing.assert_allclose(runner.infer({"x": x64})["y"], want, rtol=1e-6)  # float64 from numpy pipelines
    np.testing.assert_array_equal(runner.infer({"x": np.ones((2, 4), np.int8)})["y"], runner.infer({"x": np.ones((2, 4), np.float32)})["y"])
    half = open_model("mlp16")
    assert half.infer({"x": np.ones((1, 4), np.float32)})["y"].dtype == np.float16


def test_inputs_sharing_a_dimension_must_agree(open_model):
    runner = open_model("two_io")
    if not isinstance(runner.inputs[0].shape[0], str):
        pytest.skip("this backend does not name its dynamic dimensions (TensorRT engines)")
    feeds = {"a": np.zeros((2, 3), np.float32), "b": np.zeros((5, 3), np.float32)}
    with pytest.raises(InputError, match=r"input 'b': dimension 0 \('batch'\) is 5, but it is 2 in input 'a'"):
        runner.infer(feeds)


def test_feeds_must_be_a_mapping(open_model):
    runner = open_model("mlp")
    with pytest.raises(InputError, match=r"feeds must be a mapping .*x: float32"):
        runner.infer([np.zeros((1, 4), np.float32)])


def test_context_manager_releases(open_model):
    runner = open_model("mlp")
    with runner as active:
        assert active is runner
        active.infer(MODELS["mlp"].feeds(1))
    assert runner.closed
    with pytest.raises(RunnerClosed, match=r"is closed; open a new runner"):
        runner.infer(MODELS["mlp"].feeds(1))
    runner.close()  # closing twice is harmless
    with pytest.raises(RunnerClosed):
        with runner:
            pass


# the base contract without a backend ---------------------------------------------------------------------------------
def test_tensor_spec_normalises_dynamic_dims():
    spec = TensorSpec("ids", (-1, 80, "", "seq"), np.int64)
    assert spec.shape == (None, 80, None, "seq")
    assert spec.dtype == np.dtype(np.int64)
    assert str(spec) == "ids: int64[?, 80, ?, seq]"


def test_integer_narrowing_only_when_values_fit():
    specs = [TensorSpec("ids", (None, 4), np.int32)]
    out = validate_feeds(specs, {"ids": np.arange(8, dtype=np.int64).reshape(2, 4)})
    assert out["ids"].dtype == np.int32 and out["ids"].flags.c_contiguous
    with pytest.raises(InputError, match=r"input 'ids' expects int32 .*got int64"):
        validate_feeds(specs, {"ids": np.full((1, 4), 2**40, np.int64)})
    wide = validate_feeds([TensorSpec("ids", (None, 4), np.int64)], {"ids": np.ones((1, 4), np.int32)})
    assert wide["ids"].dtype == np.int64


def test_feeds_are_made_contiguous():
    spec = TensorSpec("x", (None, 4), np.float32)
    strided = np.zeros((4, 8), np.float32)[:, ::2]
    assert validate_feeds([spec], {"x": strided})["x"].flags.c_contiguous


# ONNX Runtime specifics ----------------------------------------------------------------------------------------------
def test_threads_and_optimization_are_honoured(onnx_files):
    import onnxruntime as ort

    with OrtRunner(onnx_files["mlp"], threads=2, optimization="disable") as runner:
        options = runner.session.get_session_options()
        assert options.intra_op_num_threads == 2
        assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        assert runner.providers == ["CPUExecutionProvider"]


@pytest.mark.parametrize("kwargs, match", [
    ({"threads": 0}, r"threads must be a positive integer"),
    ({"threads": "2"}, r"threads must be a positive integer"),
    ({"optimization": "max"}, r"unknown optimization level 'max'.*'all'"),
    ({"providers": "vulkan"}, r"unknown execution provider 'vulkan'.*'cuda'"),
])
def test_bad_ort_options(onnx_files, kwargs, match):
    with pytest.raises(InputError, match=match):
        OrtRunner(onnx_files["mlp"], **kwargs)


def test_missing_and_invalid_onnx_files(tmp_path):
    with pytest.raises(InputError, match=r"ONNX model not found: .*nowhere\.onnx; .*export"):
        OrtRunner(tmp_path / "nowhere.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(InputError, match=r"cannot load .*broken\.onnx.*not a valid ONNX model.*re-export"):
        OrtRunner(broken)


@pytest.mark.skipif("ort_cuda_works()", reason="CUDA is present here")
def test_unavailable_provider_raises_or_falls_back(onnx_files, caplog):
    with pytest.raises(BackendUnavailable, match=r"Requested provider CUDAExecutionProvider, but available providers are: .*CPUExecutionProvider"):
        OrtRunner(onnx_files["mlp"], providers="cuda")
    with caplog.at_level(logging.WARNING, logger="edge"):
        runner = OrtRunner(onnx_files["mlp"], providers=["cuda", "cpu"], fallback=True)
    assert runner.providers == ["CPUExecutionProvider"]
    assert any("CUDAExecutionProvider" in r.message and "CPUExecutionProvider" in r.message for r in caplog.records)
    runner.close()


# the factory ---------------------------------------------------------------------------------------------------------
def test_factory_opens_onnx_with_onnxruntime(onnx_files):
    with open_runner(onnx_files["mlp"], threads=1) as runner:
        assert isinstance(runner, OrtRunner) and runner.backend == "onnxruntime"
        assert runner.session.get_session_options().intra_op_num_threads == 1
        feeds = MODELS["mlp"].feeds(2)
        np.testing.assert_allclose(runner.infer(feeds)["y"], MODELS["mlp"].reference(feeds)["y"], atol=1e-5)
    with open_runner(onnx_files["mlp"], backend="onnxruntime", device="cpu") as runner:
        assert isinstance(runner, OrtRunner)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
@pytest.mark.parametrize("suffix", [".plan", ".engine"])
def test_factory_engine_without_tensorrt_names_the_install(tmp_path, suffix):
    engine = tmp_path / f"model{suffix}"
    engine.write_bytes(b"\0" * 16)
    with pytest.raises(MissingDependency, match=r"pip install 'lfmim-edge\[trt\]'.*JetPack"):
        open_runner(engine, backend="tensorrt")
    with pytest.raises(MissingDependency, match=r"lfmim-edge\[trt\]"):
        open_runner(engine)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_module_without_tensorrt(tmp_path, onnx_files):
    from edge.build.tensorrt_engine import build_engine
    from edge.runtime.tensorrt_runner import TrtRunner

    with pytest.raises(MissingDependency, match=r"lfmim-edge\[trt\]"):
        TrtRunner(tmp_path / "x.plan")
    with pytest.raises(MissingDependency, match=r"lfmim-edge\[trt\]"):
        build_engine(onnx_files["mlp"], tmp_path / "x.plan")


@pytest.mark.parametrize("name, kwargs, match", [
    ("model.pt", {}, r"cannot tell how to run 'model\.pt'.*\.onnx \(onnxruntime\).*\.plan \(tensorrt\)"),
    ("model", {}, r"suffix \(none\)"),
    ("model.onnx", {"backend": "tvm"}, r"unknown backend 'tvm'.*'onnxruntime'"),
    ("model.onnx", {"device": "tpu"}, r"unknown device 'tpu'"),
    ("model.onnx", {"backend": "tensorrt"}, r"runs on onnxruntime, not tensorrt; build a TensorRT engine"),
    ("model.plan", {"device": "cpu"}, r"tensorrt runs \.plan files on \['cuda'\], not on 'cpu'"),
    ("absent.onnx", {}, r"model file not found: .*absent\.onnx"),
])
def test_factory_rejects_bad_requests(tmp_path, onnx_files, name, kwargs, match):
    path = tmp_path / name
    if name != "absent.onnx":
        path.write_bytes(onnx_files["mlp"].read_bytes())
    with pytest.raises(InputError, match=match):
        open_runner(path, **kwargs)


@pytest.mark.skipif("ort_cuda_works()", reason="CUDA is present here")
def test_factory_cuda_absent_raises_or_falls_back(onnx_files, caplog):
    with pytest.raises(BackendUnavailable, match=r"Requested provider CUDAExecutionProvider, but available providers"):
        open_runner(onnx_files["mlp"], device="cuda")
    with caplog.at_level(logging.WARNING, logger="edge"):
        runner = open_runner(onnx_files["mlp"], device="cuda", fallback=True)
    with runner:
        assert isinstance(runner, OrtRunner) and runner.providers == ["CPUExecutionProvider"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "edge"]
    assert warnings and "falling back to CPUExecutionProvider" in warnings[0].getMessage()


def test_available_backends_explains_each_variant():
    report = available_backends()
    assert {"onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt"} <= set(report)
    assert report["onnxruntime-cpu"].startswith("available")
    for why in report.values():
        assert why.startswith(("available (", "unavailable: "))
    if not tensorrt_works() and importlib.util.find_spec("tensorrt") is None:
        assert "lfmim-edge[trt]" in report["tensorrt"]


def test_run_path_never_imports_torch():
    code = (
        "import sys, edge.runtime, edge.runtime.factory, edge.runtime.base, "
        "edge.runtime.onnxruntime_runner, edge.runtime.tensorrt_runner\n"
        "heavy = [m for m in ('torch', 'tensorrt', 'pycuda', 'onnxruntime') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from edge.runtime import available_backends; available_backends()\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
