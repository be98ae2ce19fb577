"""Quantization (INT8 Q/DQ for CPU and GPU, dynamic INT8, FP16) and the fidelity gate, on small real models.

Two networks are built here and exported with the TorchScript exporter: a small residual conv net with BatchNorm and
ReLU (the ResNet18 / MTCNN case) and the tiny LFMIM preset, trained for a few steps on a synthetic set with class
structure so its four heads make confident, distinct predictions (the transformer case: MatMul, Softmax, LayerNorm).
"""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402
from torch import nn  # noqa: E402

from edge.prepare.fidelity import (  # noqa: E402
    FidelityError, classifier_agreement, feature_cosine, gate, locate_worst_layer,
)
from edge.prepare.policy import CPU_WEIGHT_RANGE, PRECISION_POLICY, policy_for  # noqa: E402
from edge.prepare.quantize import (  # noqa: E402
    CalibrationReader, convert_fp16, quantize_dynamic_matmul, quantize_int8,
)
from edge.config import MODALITIES, PRESETS  # noqa: E402
from edge.errors import EdgeError, InputError  # noqa: E402

LFMIM_INPUTS = ["text", "audio", "vision"]


# ------------------------------------------------------------------------------------------------------- models


class MiniResNet(nn.Module):
    """A stem and one basic residual block (conv-BN-ReLU, conv-BN, add, ReLU), pooled to a 32-d feature."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.conv1, self.bn1 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.relu(x + y).mean(dim=(2, 3)))


def _export(model: nn.Module, inputs: list[torch.Tensor], path, inputs_names, output_names) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(model.eval(), tuple(inputs), str(path), dynamo=False, opset_version=17,
                          input_names=inputs_names, output_names=output_names,
                          dynamic_axes={n: {0: "batch"} for n in [*inputs_names, *output_names]})


def _images(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    """Smooth blobs plus fine noise: spatially correlated like real images, never all zero."""
    coarse = rng.normal(size=(n, 3, 8, 8))
    return (scale * (np.kron(coarse, np.ones((4, 4))) + 0.3 * rng.normal(size=(n, 3, 32, 32)))).astype(np.float32)


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    torch.manual_seed(0)
    model = MiniResNet()
    for m in model.modules():  # BatchNorm statistics of a trained net, so folding does real work
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    root = tmp_path_factory.mktemp("conv")
    path = root / "conv.onnx"
    _export(model, [torch.randn(2, 3, 32, 32)], path, ["x"], ["features"])
    rng = np.random.default_rng(0)
    calib = [{"x": _images(rng, 4)} for _ in range(16)]
    held = [{"x": _images(rng, 4)} for _ in range(8)]
    return {"root": root, "fp32": path, "calib": calib, "held": held, "rng": rng}


def _lfmim_batch(rng, protos, specs, n):
    from edge.train.synthetic import draw_labels

    y = draw_labels(n, 0.8, 7, rng)
    xs = [(2.0 * protos[u][y[:, u]][:, None, :] + rng.normal(size=(n, s.length, s.dim))).astype(np.float32)
          for u, s in enumerate(specs)]
    return xs, y


@pytest.fixture(scope="module")
def lfmim(tmp_path_factory):
    from edge.model.lfmim import LFMIM, lfmim_loss

    cfg = PRESETS["tiny"]
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    specs = [cfg.spec(m) for m in MODALITIES]
    protos = [rng.normal(size=(7, s.dim)).astype(np.float32) for s in specs]
    model = LFMIM(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and robust on a busy 2-core machine
    try:
        for _ in range(15):  # enough for confident, distinct predictions on every head (not ties)
            xs, y = _lfmim_batch(rng, protos, specs, 32)
            loss, _ = lfmim_loss(model(*map(torch.from_numpy, xs)), torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    root = tmp_path_factory.mktemp("lfmim")
    path = root / "lfmim.onnx"
    xs, _ = _lfmim_batch(rng, protos, specs, 2)
    _export(model, list(map(torch.from_numpy, xs)), path, LFMIM_INPUTS, ["t", "a", "v", "m"])

    def feeds(count):
        return [dict(zip(LFMIM_INPUTS, _lfmim_batch(rng, protos, specs, 8)[0])) for _ in range(count)]

    return {"root": root, "fp32": path, "calib": feeds(12), "held": feeds(16)}


# ------------------------------------------------------------------------------------------------------ helpers


def _inits(model) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _activation_quantizers(model):
    """QuantizeLinear nodes on activations (their input is not an initializer): (node, zero point array)."""
    inits = _inits(model)
    return [(n, inits[n.input[2]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits]


def _logit_check(fp32_path, quant_path, held, *, emulate=False):
    """Per head: the largest logit error relative to the logits' spread, and the top-1 agreement on the rows whose
    FP32 decision is clear (top-1 minus top-2 at least half the spread).  A bound on the logits, not a count of
    flips: near-tied rows flip under any noise and say nothing about the quantization (issue 9)."""
    options = ort.SessionOptions()
    if emulate:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    a_sess = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    b_sess = ort.InferenceSession(str(quant_path), options, providers=["CPUExecutionProvider"])
    out = {}
    for i, head in enumerate("tavm"):
        a = np.concatenate([a_sess.run(None, f)[i] for f in held]).astype(np.float64)
        b = np.concatenate([b_sess.run(None, f)[i] for f in held]).astype(np.float64)
        spread = float(a.std())
        top2 = np.sort(a, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) >= 0.5 * spread
        out[head] = {"rel_error": float(np.abs(a - b).max()) / spread, "clear": float(clear.mean()),
                     "agreement_clear": float((a.argmax(1) == b.argmax(1))[clear].mean())}
    return out


#: Largest LFMIM logit error allowed, as a fraction of the logits' standard deviation.  Measured with 7-bit
#: weights on a 2-core x86: 0.003-0.006 (static Q/DQ), 0.016-0.026 (dynamic); 16-bit saturation without VNNI
#: would exceed it by far.
MAX_REL_LOGIT_ERROR = 0.1


def _run(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


# ------------------------------------------------------------------------------------------- Q/DQ forms, conv net


def test_cpu_form_is_u8s8_per_channel_and_agrees(conv):
    out = conv["root"] / "conv_cpu.onnx"
    report = quantize_int8(conv["fp32"], out, CalibrationReader(conv["calib"]), target="cpu", network="resnet18")
    assert report.activation_type == "QUInt8" and report.weight_type == "QInt8" and report.preprocessed
    model = onnx.load(str(out))
    inits = _inits(model)
    acts = _activation_quantizers(model)
    assert acts and all(zp.dtype == np.uint8 for _, zp in acts)
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    conv_weights = [n for n in weight_dq if inits[n.input[0]].ndim == 4]
    assert conv_weights and all(inits[n.input[0]].dtype == np.int8 for n in weight_dq if inits[n.input[0]].ndim > 1)
    assert all(inits[n.input[0]].dtype == np.int32 for n in weight_dq if inits[n.input[0]].ndim == 1)  # biases
    assert all(inits[n.input[1]].size > 1 for n in conv_weights)  # per-channel scales
    lo, hi = CPU_WEIGHT_RANGE  # 7-bit weights: no int16 saturation in x86's U8S8 kernels without VNNI
    assert all(lo <= inits[n.input[0]].min() and inits[n.input[0]].max() <= hi for n in conv_weights)
    assert _run(out, conv["held"][0])[0].shape == (4, 32)

    fid = feature_cosine(conv["fp32"], out, conv["held"])
    assert fid.figures["features"]["mean_cosine"] >= 0.99
    figures = gate(fid)
    assert figures["passed"] and "worst_layer" not in figures
    json.dumps({"quantization": report.to_dict(), "fidelity": figures})  # manifest-ready


def test_gpu_form_is_symmetric_s8s8_with_qdq_on_weights_and_runs_on_cpu(conv):
    out = conv["root"] / "conv_gpu.onnx"
    report = quantize_int8(conv["fp32"], out, CalibrationReader(conv["calib"]), target="gpu")
    assert report.symmetric_activations and report.activation_type == "QInt8"
    model = onnx.load(str(out))
    inits = _inits(model)
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    zero_points = [inits[n.input[2]] for n in quantizers]
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)
    biases = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert not biases  # TensorRT takes float biases, not an int32 DequantizeLinear
    on_weights = [n for n in quantizers if n.input[0] in inits]
    assert len(on_weights) == 4  # three convs and the fc, each weight with its own Q/DQ pair
    assert all(inits[n.input[0]].dtype == np.float32 for n in on_weights)
    # the TensorRT form is judged with its Q/DQ executed exactly (no CPU integer kernels), like the build's gate
    fid = feature_cosine(conv["fp32"], out, conv["held"], emulate=True)
    assert fid.figures["features"]["mean_cosine"] >= 0.99
    assert gate(fid)["passed"]
    exact = feature_cosine(conv["fp32"], out, conv["held"], emulate=True).figures["features"]
    assert exact == fid.figures["features"]  # emulation is deterministic


def test_fp16_variant_has_half_weights_float_io_and_runs_on_cpu(conv, lfmim):
    out = conv["root"] / "conv_fp16.onnx"
    convert_fp16(conv["fp32"], out)
    model = onnx.load(str(out))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    io = [*model.graph.input, *model.graph.output]
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in io)
    assert _run(out, conv["held"][0])[0].dtype == np.float32
    assert feature_cosine(conv["fp32"], out, conv["held"]).figures["features"]["min_cosine"] >= 0.999

    out = lfmim["root"] / "lfmim_fp16.onnx"
    report = convert_fp16(lfmim["fp32"], out)
    assert {"LayerNormalization", "Softmax"} <= set(report.kept_fp32_ops)
    fid = classifier_agreement(lfmim["fp32"], out, lfmim["held"])
    assert all(f["agreement"] == 1.0 for f in fid.figures.values())


def test_fp16_keeps_a_chain_of_policy_nodes_in_fp32_end_to_end(tmp_path):
    """x * 300 * 300 / 90000 leaves FP16's range (65504) in the middle and in its constant: kept nodes must stay
    FP32 on every edge between them, not just inside each node (ONNX Runtime's converter rounds each edge through
    FP16), with their FP32 constants."""
    from onnx import TensorProto, helper

    consts = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("a", 300.0), ("b", 90000.0))]
    nodes = [helper.make_node("Mul", ["x", "a"], ["m1"], name="/front/mel/Mul"),
             helper.make_node("Mul", ["m1", "a"], ["m2"], name="/front/mel/Mul_1"),
             helper.make_node("Div", ["m2", "b"], ["d"], name="/front/mel/Div"),
             helper.make_node("Relu", ["d"], ["y"], name="/head/Relu")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=consts)
    src = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    x = np.array([1.0, 0.5, 2.0, 0.001], np.float32)
    naive = _run(_fp16(src, tmp_path / "naive.onnx", []), {"x": x})[0]
    assert not np.allclose(naive, x, rtol=0.05)  # what this guards against: all-FP16 is wrong here
    keep = [n.name for n in nodes if n.name.startswith("/front/mel/")]
    kept = _run(_fp16(src, tmp_path / "kept.onnx", keep), {"x": x})[0]
    np.testing.assert_allclose(kept, x, rtol=1e-3)
    casts = [n for n in onnx.load(str(tmp_path / "kept.onnx")).graph.node if n.op_type == "Cast"]
    assert len(casts) <= 3  # no FP32 -> FP16 -> FP32 round trip left between the kept nodes


def _fp16(src, out, keep):
    convert_fp16(src, out, keep_nodes=keep, use_modelopt=False)
    return out


def test_the_whisper_fronts_fp16_policy_keeps_its_log_mel_front_end():
    policy = policy_for("whisper-base-l1-proj")
    assert policy.gpu == "fp16" and policy.fp16_keep and policy_for("logmel-cnn").fp16_keep == ()


# ------------------------------------------------------------------------------------------------- LFMIM (MatMul)


# ids avoid the word "gpu": tests/conftest.py skips every test with a "gpu" keyword (these run on the CPU)
@pytest.mark.parametrize("target", ["cpu", "gpu"], ids=["u8s8-for-cpu", "s8s8-for-tensorrt"])
def test_lfmim_matmul_only_int8_agrees_on_every_head(lfmim, target):
    out = lfmim["root"] / f"lfmim_{target}.onnx"
    report = quantize_int8(lfmim["fp32"], out, lfmim["calib"], target=target, network="lfmim")
    assert report.op_types == ("MatMul",)
    model = onnx.load(str(out))
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    readers = {n.op_type for n in model.graph.node if set(n.input) & dq_outputs}
    assert "MatMul" in readers and not readers & {"Conv", "LayerNormalization", "Softmax"}  # those stay FP32
    if target == "gpu":  # TensorRT placement: Q/DQ on the inputs of the quantized ops only
        assert readers == {"MatMul"}
    fid = classifier_agreement(lfmim["fp32"], out, lfmim["held"], emulate=target == "gpu")
    assert fid.samples == 16 and fid.figures["m"]["rows"] == 128
    checks = _logit_check(lfmim["fp32"], out, lfmim["held"], emulate=target == "gpu")
    for head in "tavm":
        assert fid.figures[head]["logit_cosine"] >= 0.999, (head, fid.figures)
        assert checks[head]["rel_error"] <= MAX_REL_LOGIT_ERROR, (head, checks)
        assert checks[head]["clear"] >= 0.5 and checks[head]["agreement_clear"] == 1.0, (head, checks)


def test_dynamic_matmul_is_cpu_only_and_agrees(lfmim):
    out = lfmim["root"] / "lfmim_dynamic.onnx"
    report = quantize_dynamic_matmul(lfmim["fp32"], out)
    assert report.method == "int8-dynamic" and report.target == "cpu"
    int8_weights = [w for w in _inits(onnx.load(str(out))).values() if w.dtype == np.int8]
    assert int8_weights and all(CPU_WEIGHT_RANGE[0] <= w.min() and w.max() <= CPU_WEIGHT_RANGE[1] for w in int8_weights)
    assert report.quant_ops.get("MatMulInteger", 0) > 0 and "QuantizeLinear" not in report.quant_ops
    checks = _logit_check(lfmim["fp32"], out, lfmim["held"])
    for head in "tavm":
        assert checks[head]["rel_error"] <= MAX_REL_LOGIT_ERROR, (head, checks)
        assert checks[head]["clear"] >= 0.5 and checks[head]["agreement_clear"] == 1.0, (head, checks)


# ------------------------------------------------------------------------------------------ the gate failing


def _corrupt_weight_scale(src, dst, factor: float = 40.0) -> str:
    """Multiply the scale of the second conv weight's Q/DQ (either form); returns that weight's FP32 name."""
    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    found = []  # (weight name, its DequantizeLinear) in graph order
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        if source in inits and len(inits[source].dims) == 4:  # CPU form: int8 weight -> DQ
            found.append((source.removesuffix("_quantized"), node))
        elif source in producers and producers[source].input[0] in inits:  # GPU form: weight -> Q -> DQ
            weight = producers[source].input[0]
            if len(inits[weight].dims) == 4:
                found.append((weight, node))
    weight, dq = found[1]
    scale = inits[dq.input[1]]
    broken = numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(factor), scale.name + "_broken")
    model.graph.initializer.append(broken)  # the GPU form's Q shares the scale: break the DQ's copy only
    dq.input[1] = broken.name
    onnx.save(model, str(dst))
    return weight


@pytest.mark.parametrize("target", ["cpu", "gpu"], ids=["u8s8-for-cpu", "s8s8-for-tensorrt"])
def test_gate_fails_on_a_corrupted_weight_scale_and_names_it(conv, target, caplog):
    good = conv["root"] / f"conv_{target}_for_corruption.onnx"
    quantize_int8(conv["fp32"], good, conv["calib"], target=target)
    bad = conv["root"] / f"conv_{target}_corrupt.onnx"
    weight = _corrupt_weight_scale(good, bad)
    fid = feature_cosine(conv["fp32"], bad, conv["held"])
    assert fid.figures["features"]["mean_cosine"] < 0.99
    with pytest.raises(FidelityError, match=r"mean cosine of output 'features' .* < 0\.99.*worst layer: .*\(Conv\)"):
        gate(fid)
    worst = fid.worst_layer
    assert worst["kind"] == "weight" and worst["tensor"] == weight and worst["sqnr_db"] < 10
    assert worst["nodes"] == ["/conv1/Conv"] and worst["op_types"] == ["Conv"]
    with caplog.at_level(logging.WARNING, logger="edge"):
        figures = gate(fid, force=True)
    assert figures["forced"] and not figures["passed"] and figures["worst_layer"]["tensor"] == weight
    assert "kept because of --force" in caplog.text
    json.dumps(figures)


def test_gate_fails_when_calibrated_on_the_wrong_scale(conv):
    rng = np.random.default_rng(5)
    tiny = [{"x": _images(rng, 4, scale=0.02)} for _ in range(8)]
    bad = conv["root"] / "conv_miscalibrated.onnx"
    quantize_int8(conv["fp32"], bad, tiny, target="gpu")
    fid = feature_cosine(conv["fp32"], bad, conv["held"])
    with pytest.raises(FidelityError, match=r"worst layer: .*activation '.*' at -?[0-9.]+ dB SQNR"):
        gate(fid)
    assert fid.worst_layer["kind"] == "activation" and fid.worst_layer["sqnr_db"] < 15
    ranking = [entry["sqnr_db"] for entry in fid.worst_layer["ranking"]]
    assert ranking == sorted(ranking)


def test_lfmim_gate_fails_below_the_agreement_threshold(lfmim):
    out = lfmim["root"] / "lfmim_gate.onnx"
    quantize_int8(lfmim["fp32"], out, lfmim["calib"], target="cpu", network="lfmim")
    fid = classifier_agreement(lfmim["fp32"], out, lfmim["held"])
    fid.figures["m"]["agreement"] = 0.9  # as if 10 % of the fused predictions flipped
    with pytest.raises(FidelityError, match=r"top-1 agreement of head 'm' 0\.9000 < 0\.99.*worst layer: .*MatMul"):
        gate(fid)


def test_worst_layer_is_none_without_static_qdq(lfmim):
    out = lfmim["root"] / "lfmim_dynamic_debug.onnx"
    quantize_dynamic_matmul(lfmim["fp32"], out)
    assert locate_worst_layer(lfmim["fp32"], out, lfmim["held"]) is None


# ----------------------------------------------------------------------------------------------------- bad input


def test_empty_calibration_set_is_an_input_error(conv):
    with pytest.raises(InputError, match="calibration set is empty.*point the calibration recipe"):
        CalibrationReader([])
    with pytest.raises(InputError, match="empty"):
        quantize_int8(conv["fp32"], conv["root"] / "never.onnx", iter(()), target="cpu")
    assert not (conv["root"] / "never.onnx").exists()


def test_wrong_shaped_feeds_name_the_input_and_both_shapes(conv):
    small = [{"x": np.ones((4, 3, 16, 16), np.float32)}]
    with pytest.raises(InputError, match=r"input 'x' of conv\.onnx expects shape \('\?', 3, 32, 32\) .*"
                                         r"but was given \(4, 3, 16, 16\).*point the calibration recipe"):
        quantize_int8(conv["fp32"], conv["root"] / "never.onnx", small, target="cpu")
    with pytest.raises(InputError, match=r"inputs \['image'\] but conv\.onnx expects \['x'\]"):
        CalibrationReader([{"image": conv["calib"][0]["x"]}], model_path=conv["fp32"])
    with pytest.raises(InputError, match=r"expects float32 but was given float64"):
        CalibrationReader([{"x": conv["calib"][0]["x"].astype(np.float64)}], model_path=conv["fp32"])
    with pytest.raises(InputError, match=r"sample 0 is a ndarray; each sample must be a dict of input name"):
        CalibrationReader([conv["calib"][0]["x"]])
    with pytest.raises(InputError, match=r"held-out set sample 0"):
        feature_cosine(conv["fp32"], conv["fp32"], small)


def test_missing_files_and_unknown_names(conv, tmp_path):
    with pytest.raises(InputError, match=r"FP32 ONNX model not found: .*nope\.onnx"):
        quantize_int8(tmp_path / "nope.onnx", tmp_path / "out.onnx", conv["calib"], target="cpu")
    with pytest.raises(InputError, match="not found"):
        convert_fp16(tmp_path / "nope.onnx", tmp_path / "out.onnx")
    with pytest.raises(InputError, match="not found"):
        quantize_dynamic_matmul(tmp_path / "nope.onnx", tmp_path / "out.onnx")
    with pytest.raises(InputError, match=r"quantized ONNX model not found"):
        feature_cosine(conv["fp32"], tmp_path / "nope.onnx", conv["held"])
    with pytest.raises(InputError, match=r"unknown quantization target 'tpu'; choose one of \['cpu', 'gpu'\]"):
        quantize_int8(conv["fp32"], tmp_path / "out.onnx", conv["calib"], target="tpu")
    with pytest.raises(InputError, match=r"no precision policy for network 'vgg'.*resnet18"):
        quantize_int8(conv["fp32"], tmp_path / "out.onnx", conv["calib"], target="cpu", network="vgg")
    with pytest.raises(InputError, match=r"heads .* must be outputs of conv\.onnx; it has \['features'\]"):
        classifier_agreement(conv["fp32"], conv["fp32"], conv["held"])


def test_precision_policy_covers_every_network_with_a_reason():
    assert {"resnet18", "pnet", "rnet", "onet", "bert", "wav2vec2", "lfmim"} <= set(PRECISION_POLICY)
    for name, policy in PRECISION_POLICY.items():
        assert policy.cpu in {"int8", "int8-dynamic", "fp32"} and policy.gpu in {"int8", "fp16"}, name
        assert policy.op_types and len(policy.reason) > 40
    assert policy_for("bert").gpu == "fp16" and policy_for("resnet18").op_types == ("Conv", "Gemm", "MatMul")
    assert issubclass(FidelityError, EdgeError)
