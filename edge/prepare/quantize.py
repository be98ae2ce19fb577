"""Quantization of FP32 ONNX files: explicit INT8 Q/DQ, dynamic INT8 and FP16 (torch-free: onnx, onnxruntime).

Two INT8 forms, chosen by *target* (see ``../shared/reference/tensorrt-notes.md`` and issue 3's measurements):

- ``cpu``: what ONNX Runtime's CPU kernels run fast and exactly on every processor: uint8 activations, 7-bit int8
  per-channel weights (U8S8 with ``reduce_range``: no 16-bit saturation on x86 without VNNI, see
  :mod:`edge.prepare.policy`), weights stored as int8 initializers behind a DequantizeLinear.
- ``gpu``: TensorRT's explicit-quantization rules: symmetric int8 activations and full 8-bit weights (S8S8, every
  zero point 0) with a QuantizeLinear/DequantizeLinear pair on each float weight, so TensorRT builds a strongly typed
  network from it (TensorRT 11 has no other INT8 path) and ONNX Runtime CPU still runs it for parity tests (slowly:
  never ship this form to a CPU).

:func:`quantize_dynamic_matmul` writes the fast CPU form for transformers (7-bit int8 weights, activations quantized
at run time; *not* Q/DQ-static, CPU only; TensorRT cannot build it).  :func:`convert_fp16` writes the FP16 variant
for GPUs.  Which precision each network gets, and why, is :data:`edge.prepare.policy.PRECISION_POLICY`.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.fileio import atomic_path
from edge.prepare.policy import CONV_OPS, MATMUL_OPS, policy_for

log = logging.getLogger("edge")

Target = Literal["cpu", "gpu"]
TARGETS: tuple[str, ...] = ("cpu", "gpu")

#: Ops kept in float32 by :func:`convert_fp16` (on top of ONNX Runtime's own block list): normalisations and
#: reductions whose sums of squares overflow or lose precision in FP16, and Softmax's exp/sum.
FP16_BLOCK_OPS: tuple[str, ...] = (
    "LayerNormalization", "InstanceNormalization", "GroupNormalization", "Softmax", "ReduceMean", "ReduceSum",
    "Pow", "Sqrt", "Reciprocal",
)


# --------------------------------------------------------------------------------------------- calibration data


def _model_inputs(model_path: Path) -> dict[str, tuple[tuple[int | str | None, ...], int]]:
    """Graph inputs (not initializers) of an ONNX file: name -> (dims, ONNX element type)."""
    onnx = lazy_import("onnx", purpose="quantization")
    model = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    found = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        dims = tuple(d.dim_param or (int(d.dim_value) if d.HasField("dim_value") else None)
                     for d in value.type.tensor_type.shape.dim)
        found[value.name] = (dims, value.type.tensor_type.elem_type)
    return found


class CalibrationReader:
    """ONNX Runtime calibration reader over a finite iterable of feed dicts (input name -> numpy array).

    It has ``get_next``, so it is an ``onnxruntime.quantization.CalibrationDataReader`` (that class recognises
    readers by that method), without importing onnxruntime here.

    The feeds are materialised once (calibration sets are a few hundred samples); ``len()`` gives their number and
    :meth:`rewind` starts again, so one reader serves calibration and the fidelity gate.  :meth:`check` compares the
    feeds with a model's inputs and raises :class:`~edge.errors.InputError` naming the input, the expected and the
    given shape; an empty set is an error at construction.
    """

    def __init__(self, feeds: Iterable[Mapping[str, Any]], *, model_path: str | Path | None = None,
                 source: str = "calibration set") -> None:
        self.source = source
        self._feeds = []
        for number, feed in enumerate(feeds):
            if not isinstance(feed, Mapping):
                raise InputError(
                    f"{source} sample {number} is a {type(feed).__name__}; each sample must be a dict of input "
                    "name -> numpy array (one feed of the model)"
                )
            self._feeds.append({str(k): np.asarray(v) for k, v in feed.items()})
        if not self._feeds:
            raise InputError(
                f"the {source} is empty: quantization needs representative samples; point the calibration recipe "
                "at a folder or feature store that holds samples (e.g. ../shared/data) or raise its sample count"
            )
        self._index = 0
        if model_path is not None:
            self.check(model_path)

    def __len__(self) -> int:
        return len(self._feeds)

    @property
    def feeds(self) -> list[dict[str, np.ndarray]]:
        return list(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._index >= len(self._feeds):
            return None
        self._index += 1
        return self._feeds[self._index - 1]

    def rewind(self) -> None:
        self._index = 0

    def __iter__(self) -> "CalibrationReader":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed

    def check(self, model_path: str | Path) -> None:
        """Raise :class:`InputError` unless every feed matches ``model_path``'s input names, ranks, sizes and types."""
        onnx = lazy_import("onnx", purpose="quantization")
        path = _existing(model_path, "ONNX model")
        inputs = _model_inputs(path)
        fix = "point the calibration recipe at samples made for this network (same preprocessing and sizes)"
        for number, feed in enumerate(self._feeds):
            if set(feed) != set(inputs):
                raise InputError(
                    f"{self.source} sample {number} has inputs {sorted(feed)} but {path.name} expects "
                    f"{sorted(inputs)}; {fix}"
                )
            for name, (dims, elem) in inputs.items():
                given = feed[name]
                expected = tuple(d if isinstance(d, int) else "?" for d in dims)
                fits = given.ndim == len(dims) and all(
                    not isinstance(d, int) or d == s for d, s in zip(dims, given.shape))
                if not fits:
                    raise InputError(
                        f"{self.source} sample {number}: input {name!r} of {path.name} expects shape {expected} "
                        f"('?' = any size) but was given {tuple(given.shape)}; {fix}"
                    )
                want = onnx.helper.tensor_dtype_to_np_dtype(elem)
                if given.dtype != want:
                    raise InputError(
                        f"{self.source} sample {number}: input {name!r} of {path.name} expects {np.dtype(want).name} "
                        f"but was given {given.dtype.name}; convert the samples (e.g. .astype(np.{np.dtype(want).name}))"
                        f" or {fix}"
                    )


# ------------------------------------------------------------------------------------------------------ reports


@dataclass(frozen=True)
class QuantReport:
    """What a quantization or FP16 conversion wrote, and how."""

    source: Path
    path: Path
    method: str  # "int8-qdq", "int8-dynamic" or "fp16"
    target: str
    activation_type: str | None = None
    weight_type: str | None = None
    symmetric_activations: bool = False
    per_channel: bool = False
    op_types: tuple[str, ...] = ()
    excluded_nodes: tuple[str, ...] = ()
    calibration_samples: int = 0
    preprocessed: bool = False
    preprocess_note: str = ""
    #: op type -> count in the written graph, for the Q/DQ and quantized-kernel ops.
    quant_ops: dict[str, int] = field(default_factory=dict)
    kept_fp32_ops: tuple[str, ...] = ()
    seconds: float = 0.0
    size_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures for the build manifest."""
        return {
            "source": self.source.name, "path": self.path.name, "method": self.method, "target": self.target,
            "activation_type": self.activation_type, "weight_type": self.weight_type,
            "symmetric_activations": self.symmetric_activations, "per_channel": self.per_channel,
            "op_types": list(self.op_types), "excluded_nodes": list(self.excluded_nodes),
            "calibration_samples": self.calibration_samples, "preprocessed": self.preprocessed,
            "preprocess_note": self.preprocess_note, "quant_ops": dict(self.quant_ops),
            "kept_fp32_ops": list(self.kept_fp32_ops), "seconds": round(self.seconds, 3),
            "size_bytes": self.size_bytes,
        }


_COUNTED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                "DynamicQuantizeMatMul", "Cast")


def _count_ops(path: Path) -> dict[str, int]:
    onnx = lazy_import("onnx", purpose="quantization")
    counts = Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
    return {op: counts[op] for op in _COUNTED_OPS if counts[op]}


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}; export it first (edge-build) or check the path")
    return path


# ------------------------------------------------------------------------------------------------- static INT8


def _preprocess(source: Path, workdir: Path) -> tuple[Path, bool, str]:
    """Shape inference and basic graph optimisation (Conv+BN folding etc.) before quantization, when it works."""
    shape_inference = lazy_import("onnxruntime.quantization.shape_inference", purpose="quantization")
    out = workdir / "preprocessed.onnx"
    import importlib.util

    try:  # a kiosk install has no sympy: plain shape inference then
        symbolic = importlib.util.find_spec("sympy") is not None
    except ImportError:
        symbolic = False
    try:
        shape_inference.quant_pre_process(str(source), str(out), skip_symbolic_shape=not symbolic)
        return out, True, "quant_pre_process: symbolic shape inference and basic optimisation"
    except Exception as exc:  # noqa: BLE001 - preprocessing is an optimisation; the original graph is still valid
        note = f"skipped quant_pre_process ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        log.warning("%s: %s; quantizing the graph as exported", source.name, note)
        return source, False, note


def _static_settings(target: str, quantization: Any, op_types: Sequence[str]) -> tuple[Any, Any, dict[str, Any]]:
    """(activation type, weight type, extra options) of ``target``'s Q/DQ form."""
    qt = quantization.QuantType
    extra: dict[str, Any] = {"QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}, "WeightSymmetric": True}
    if target == "cpu":
        return qt.QUInt8, qt.QInt8, extra
    # TensorRT: symmetric int8 everywhere, a Q/DQ pair on each float weight, one pair per consumer, Q/DQ on the
    # inputs of the quantized ops only (TensorRT fuses an output Q into the op when the next op wants INT8), and
    # float biases (TensorRT folds them itself; it does not take an int32 DequantizeLinear).
    extra.update({"ActivationSymmetric": True, "AddQDQPairToWeight": True, "DedicatedQDQPair": True,
                  "OpTypesToExcludeOutputQuantization": list(op_types), "QuantizeBias": False})
    return qt.QInt8, qt.QInt8, extra


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: CalibrationReader,
    *,
    target: Target,
    op_types: Sequence[str] | None = None,
    per_channel: bool = True,
    exclude_nodes: Sequence[str] = (),
    network: str | None = None,
    preprocess: bool = True,
    calibrate_method: str = "MinMax",
) -> QuantReport:
    """Static INT8 quantization with explicit QuantizeLinear/DequantizeLinear nodes (QDQ format).

    ``target="cpu"`` writes U8S8 (uint8 activations, int8 per-channel weights); ``target="gpu"`` writes TensorRT's
    S8S8 form (symmetric int8 activations and weights, zero points 0, Q/DQ pairs on the weights).  ``op_types``
    defaults to ``PRECISION_POLICY[network].op_types`` when ``network`` is given, else Conv, Gemm and MatMul.
    ``exclude_nodes`` keeps the named nodes in FP32 (e.g. the worst layer the fidelity gate names).
    ``calibrate_method`` is an ``onnxruntime.quantization.CalibrationMethod`` name (MinMax, Entropy, Percentile).
    The calibration feeds are checked against the model's inputs first.  The file appears only when complete.
    """
    quantization = lazy_import("onnxruntime.quantization", purpose="quantization")
    if target not in TARGETS:
        raise InputError(f"unknown quantization target {target!r}; choose one of {list(TARGETS)}")
    source = _existing(fp32_path, "FP32 ONNX model")
    if not isinstance(calibration, CalibrationReader):
        calibration = CalibrationReader(calibration)
    calibration.check(source)
    try:
        method = quantization.CalibrationMethod[calibrate_method]
    except KeyError:
        raise InputError(f"unknown calibration method {calibrate_method!r}; choose one of "
                         f"{[m.name for m in quantization.CalibrationMethod]}") from None
    if op_types is None:
        op_types = policy_for(network).op_types if network else CONV_OPS
    activation, weight, extra = _static_settings(target, quantization, op_types)
    out = Path(out_path)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edge-quant-") as tmp, atomic_path(out) as part:
        model, preprocessed, note = _preprocess(source, Path(tmp)) if preprocess else (source, False, "disabled")
        calibration.rewind()
        quantization.quantize_static(
            str(model), str(part), calibration, quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=list(op_types), per_channel=per_channel, reduce_range=target == "cpu",
            activation_type=activation, weight_type=weight, nodes_to_exclude=list(exclude_nodes) or None,
            calibrate_method=method, extra_options=extra,
        )
        calibration.rewind()
    report = QuantReport(
        source=source, path=out, method="int8-qdq", target=target, activation_type=activation.name,
        weight_type=weight.name, symmetric_activations=bool(extra.get("ActivationSymmetric")),
        per_channel=per_channel, op_types=tuple(op_types), excluded_nodes=tuple(exclude_nodes),
        calibration_samples=len(calibration), preprocessed=preprocessed, preprocess_note=note,
        quant_ops=_count_ops(out), seconds=time.perf_counter() - start, size_bytes=out.stat().st_size,
    )
    log.info("%s -> %s: INT8 Q/DQ for %s (%s activations, %s weights, ops %s) calibrated on %d samples in %.1f s",
             source.name, out, target, report.activation_type, report.weight_type, ",".join(op_types),
             len(calibration), report.seconds)
    return report


def quantize_dynamic_matmul(fp32_path: str | Path, out_path: str | Path, *, per_channel: bool = False,
                            exclude_nodes: Sequence[str] = (), preprocess: bool = True) -> QuantReport:
    """Dynamic INT8 on MatMul only: int8 weights, activations quantized per call at run time.

    The fast CPU path for wav2vec2-like models (4 s window: 208 ms FP32 -> 120 ms).  This is *not* static Q/DQ:
    the graph holds DynamicQuantizeLinear / MatMulInteger, which ONNX Runtime's CPU provider runs and TensorRT
    cannot build; needs no calibration set, and is for ``target="cpu"`` only.
    """
    quantization = lazy_import("onnxruntime.quantization", purpose="quantization")
    source = _existing(fp32_path, "FP32 ONNX model")
    out = Path(out_path)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edge-quant-") as tmp, atomic_path(out) as part:
        model, preprocessed, note = _preprocess(source, Path(tmp)) if preprocess else (source, False, "disabled")
        quantization.quantize_dynamic(
            str(model), str(part), op_types_to_quantize=list(MATMUL_OPS), per_channel=per_channel,
            reduce_range=True, weight_type=quantization.QuantType.QInt8,
            nodes_to_exclude=list(exclude_nodes) or None,
        )
    report = QuantReport(
        source=source, path=out, method="int8-dynamic", target="cpu", activation_type="QUInt8 (dynamic)",
        weight_type="QInt8", per_channel=per_channel, op_types=MATMUL_OPS, excluded_nodes=tuple(exclude_nodes),
        preprocessed=preprocessed, preprocess_note=note, quant_ops=_count_ops(out), seconds=time.perf_counter() - start,
        size_bytes=out.stat().st_size,
    )
    log.info("%s -> %s: dynamic INT8 on MatMul (CPU only, not Q/DQ) in %.1f s", source.name, out, report.seconds)
    return report


# --------------------------------------------------------------------------------------------------------- FP16


def _autocast_modelopt(source: Path, keep_io_types: bool, keep_nodes: Sequence[str] = ()) -> Any | None:
    """NVIDIA ModelOpt AutoCast when ``modelopt`` is installed (it chooses the FP32 islands itself), else None."""
    try:
        autocast = __import__("modelopt.onnx.autocast", fromlist=["convert_to_mixed_precision"])
    except ImportError:
        return None
    log.info("%s: FP16 through NVIDIA ModelOpt AutoCast", source.name)
    exact = [f"^{re.escape(name)}$" for name in keep_nodes] or None  # AutoCast takes name patterns
    return autocast.convert_to_mixed_precision(onnx_path=str(source), low_precision_type="fp16",
                                               keep_io_types=keep_io_types, nodes_to_exclude=exact)


def _join_fp32_islands(model: Any) -> int:
    """Remove the FP32 -> FP16 -> FP32 Cast round trips that ONNX Runtime's converter puts on every edge between two
    nodes it keeps in FP32: a chain of kept nodes then stays FP32 end to end (a log-mel front end's power spectrum
    would otherwise overflow on the edge).  Returns the number of round trips removed."""
    onnx = lazy_import("onnx", purpose="FP16 conversion")
    g = model.graph
    # the converter types every edge it wrote: a kept node's output is a float32 tensor in value_info
    float32 = {v.name for v in [*g.input, *g.value_info] if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    float32 |= {t.name for t in g.initializer if t.data_type == onnx.TensorProto.FLOAT}

    def cast_to(node) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    rename = {}
    for node in g.node:
        if cast_to(node) != onnx.TensorProto.FLOAT or node.output[0] in outputs:
            continue
        up = producer.get(node.input[0])
        if up is not None and cast_to(up) == onnx.TensorProto.FLOAT16 and up.input[0] in float32:
            rename[node.output[0]] = up.input[0]
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    while True:  # drop the Casts nothing reads any more
        used = {i for n in g.node for i in n.input} | outputs
        dead = [n for n in g.node if n.op_type == "Cast" and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    return len(rename)


def convert_fp16(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    keep_io_types: bool = True,
    block_ops: Sequence[str] = FP16_BLOCK_OPS,
    keep_nodes: Sequence[str] = (),
    use_modelopt: bool | None = None,
) -> QuantReport:
    """Write an FP16 variant for GPUs (TensorRT builds it as a strongly typed FP16 network).

    Uses ModelOpt AutoCast when ``modelopt`` is importable (``use_modelopt=None``: auto; ``False``: never), else
    ONNX Runtime's ``convert_float_to_float16`` with ``block_ops`` (normalisation, Softmax and reductions) left in
    FP32 behind Casts.  ``keep_nodes`` (node names, e.g. :meth:`NetworkPolicy.fp16_kept_nodes`) stay FP32 too, with
    either converter.  ``keep_io_types`` keeps float32 inputs and outputs so callers feed the same arrays as for
    FP32.  The result also runs on ONNX Runtime's CPU provider (slower than FP32 there: it is not a CPU format).
    """
    onnx = lazy_import("onnx", purpose="FP16 conversion")
    source = _existing(fp32_path, "FP32 ONNX model")
    out = Path(out_path)
    start = time.perf_counter()
    model = _autocast_modelopt(source, keep_io_types, keep_nodes) if use_modelopt in (None, True) else None
    if model is None and use_modelopt:
        lazy_import("modelopt", purpose="FP16 conversion with ModelOpt AutoCast")
    engine = "modelopt-autocast" if model is not None else "onnxruntime-float16"
    if model is None:
        float16 = lazy_import("onnxruntime.transformers.float16", purpose="FP16 conversion")
        blocked = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(block_ops))
        model = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=keep_io_types,
                                                 op_block_list=blocked, node_block_list=list(keep_nodes) or None)
        if keep_nodes:
            _join_fp32_islands(model)
    with atomic_path(out) as part:
        onnx.save(model, str(part))
    present = {n.op_type for n in model.graph.node}
    report = QuantReport(
        source=source, path=out, method="fp16", target="gpu", activation_type="float16", weight_type="float16",
        op_types=(engine,), kept_fp32_ops=tuple(sorted(present & set(block_ops))), excluded_nodes=tuple(keep_nodes),
        quant_ops=_count_ops(out),
        seconds=time.perf_counter() - start, size_bytes=out.stat().st_size,
    )
    log.info("%s -> %s: FP16 (%s), kept FP32: %s%s", source.name, out, engine, ", ".join(report.kept_fp32_ops) or "none",
             f"; {len(keep_nodes)} nodes by policy" if keep_nodes else "")
    return report
