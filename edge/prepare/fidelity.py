"""The fidelity gate: a quantized (or FP16) network against its FP32 original on held-out data (torch-free).

Two measurements, both run on ONNX Runtime's CPU provider, so they work wherever the build runs:

- :func:`classifier_agreement` for LFMIM: top-1 agreement with FP32 on every logit head (t, a, v, m) and the mean
  cosine of the logits;
- :func:`feature_cosine` for the extractors: cosine similarity of every feature vector (the last axis) with FP32,
  mean and minimum per output.

:func:`gate` holds the figures to the thresholds (default: 99 % top-1 agreement on the fused head, 0.99 mean cosine
on every extractor output).  On a failure it locates the worst layer with ONNX Runtime's Q/DQ debugging tools
(:mod:`onnxruntime.quantization.qdq_loss_debug`): the activation whose Q/DQ adds the most noise (lowest
signal-to-quantization-noise ratio, SQNR, in dB) or the weight that quantizes worst, names it and the node that
consumes it, and raises :class:`FidelityError` unless ``force``.  Every figure is returned as a JSON-ready dict
for the build manifest.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from edge._lazy import lazy_import
from edge.prepare.quantize import CalibrationReader, _existing
from edge.errors import EdgeError, InputError

log = logging.getLogger("edge")

LFMIM_HEADS: tuple[str, ...] = ("t", "a", "v", "m")
FUSED_HEAD = "m"
MIN_AGREEMENT = 0.99
MIN_COSINE = 0.99
#: Held-out samples run through the intermediate-tensor models when locating the worst layer (they keep every
#: activation in memory, so a few are enough).
DEBUG_SAMPLES = 8


class FidelityError(EdgeError, RuntimeError):
    """A quantized network disagrees with FP32 on held-out data by more than the gate allows."""


@dataclass
class FidelityReport:
    """Figures of one quantized network against FP32; ``kind`` is ``"classifier"`` or ``"features"``."""

    kind: str
    fp32_path: Path
    quant_path: Path
    samples: int
    #: output name -> figures: ``agreement`` and ``logit_cosine`` (classifier) or ``mean_cosine`` and
    #: ``min_cosine`` (features).
    figures: dict[str, dict[str, float]]
    fused: str | None = None
    worst_layer: dict[str, Any] | None = None
    feeds: list[dict[str, np.ndarray]] = field(default_factory=list, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind, "fp32": self.fp32_path.name, "quantized": self.quant_path.name,
            "samples": self.samples, "outputs": {k: dict(v) for k, v in self.figures.items()},
        }
        if self.fused is not None:
            out["fused_head"] = self.fused
        if self.worst_layer is not None:
            out["worst_layer"] = self.worst_layer
        return out


# ------------------------------------------------------------------------------------------------- measurement


def _held_out(feeds: Iterable[Mapping[str, Any]], model: Path) -> list[dict[str, np.ndarray]]:
    reader = feeds if isinstance(feeds, CalibrationReader) else CalibrationReader(feeds, source="held-out set")
    reader.check(model)
    return reader.feeds


def _run_both(fp32_path: str | Path, quant_path: str | Path, feeds: Iterable[Mapping[str, Any]], *,
              emulate: bool = False
              ) -> tuple[Path, Path, list[dict[str, np.ndarray]], list[str], list[list[np.ndarray]], list[list[np.ndarray]]]:
    ort = lazy_import("onnxruntime", purpose="the fidelity gate")
    fp32 = _existing(fp32_path, "FP32 ONNX model")
    quant = _existing(quant_path, "quantized ONNX model")
    held = _held_out(feeds, fp32)
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32, quant)]
    if emulate:  # no graph optimisation: Q/DQ run as float ops (exact int8 rounding, no CPU integer kernels)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sessions[1] = ort.InferenceSession(str(quant), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in sessions[0].get_outputs()]
    missing = sorted(set(names) - {o.name for o in sessions[1].get_outputs()})
    if missing:
        raise InputError(f"{quant.name} lacks outputs {missing} of {fp32.name}; it was not made from that model")
    ref = [sessions[0].run(names, f) for f in held]
    got = [sessions[1].run(names, f) for f in held]
    return fp32, quant, held, names, ref, got


def _rows(batches: Sequence[Sequence[np.ndarray]], index: int) -> np.ndarray:
    """Output ``index`` of every batch as float64 feature vectors: (n, features).

    Features lie along the last axis, except for rank-4 (NCHW) maps such as P-Net's, whose features are the
    channels at each position (the spatial size may differ from batch to batch).
    """
    arrays = [np.asarray(b[index], dtype=np.float64) for b in batches]
    arrays = [np.moveaxis(a, 1, -1) if a.ndim == 4 else a for a in arrays]
    return np.concatenate([a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1) for a in arrays])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine; two (near-)zero rows count as identical, one zero row as orthogonal."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    tiny = np.finfo(np.float32).tiny
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, tiny)
    both_zero = (na <= tiny) & (nb <= tiny)
    return np.where(both_zero, 1.0, np.clip(cos, -1.0, 1.0))


def classifier_agreement(
    fp32_path: str | Path,
    quant_path: str | Path,
    feeds: Iterable[Mapping[str, Any]],
    *,
    heads: Sequence[str] = LFMIM_HEADS,
    fused: str = FUSED_HEAD,
    emulate: bool = False,
) -> FidelityReport:
    """Top-1 agreement of ``quant_path`` with ``fp32_path`` per logit head over the held-out ``feeds``.

    ``heads`` name (batch, classes) outputs; ``fused`` is the head :func:`gate` holds to ``min_agreement``.
    ``emulate`` runs the quantized graph without ONNX Runtime's graph optimisations, so its Q/DQ nodes execute as
    exact float arithmetic instead of this CPU's integer kernels: the figure for a TensorRT (GPU) form, which no
    CPU's kernels decide.
    Ties in the FP32 logits are not special-cased: a model whose logits tie is not trained enough to gate.
    """
    fp32, quant, held, names, ref, got = _run_both(fp32_path, quant_path, feeds, emulate=emulate)
    unknown = [h for h in heads if h not in names]
    if unknown or fused not in heads:
        raise InputError(f"heads {list(heads)} (fused {fused!r}) must be outputs of {fp32.name}; it has {names}")
    figures = {}
    for head in heads:
        index = names.index(head)
        a, b = _rows(ref, index), _rows(got, index)
        figures[head] = {
            "agreement": float(np.mean(a.argmax(axis=1) == b.argmax(axis=1))),
            "logit_cosine": float(np.mean(_cosines(a, b))),
            "rows": int(a.shape[0]),
        }
    log.info("%s vs FP32: top-1 agreement %s", quant.name,
             ", ".join(f"{h} {figures[h]['agreement']:.4f}" for h in heads))
    return FidelityReport("classifier", fp32, quant, len(held), figures, fused=fused, feeds=held)


def feature_cosine(
    fp32_path: str | Path,
    quant_path: str | Path,
    feeds: Iterable[Mapping[str, Any]],
    *,
    outputs: Sequence[str] | None = None,
    emulate: bool = False,
) -> FidelityReport:
    """Cosine similarity of each feature vector (last axis) of every output (or ``outputs``) with FP32
    (``emulate``: as in :func:`classifier_agreement`)."""
    fp32, quant, held, names, ref, got = _run_both(fp32_path, quant_path, feeds, emulate=emulate)
    chosen = list(outputs) if outputs is not None else names
    unknown = [o for o in chosen if o not in names]
    if unknown:
        raise InputError(f"outputs {unknown} are not outputs of {fp32.name}; it has {names}")
    figures = {}
    for name in chosen:
        index = names.index(name)
        cos = _cosines(_rows(ref, index), _rows(got, index))
        figures[name] = {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()), "rows": int(cos.size)}
    log.info("%s vs FP32: mean cosine %s", quant.name,
             ", ".join(f"{n} {figures[n]['mean_cosine']:.5f}" for n in chosen))
    return FidelityReport("features", fp32, quant, len(held), figures, feeds=held)


# ------------------------------------------------------------------------------------------- worst layer (Q/DQ)


def _sqnr(reference: Any, other: Any) -> float:
    debug = lazy_import("onnxruntime.quantization.qdq_loss_debug", purpose="locating the worst quantized layer")
    return float(debug.compute_signal_to_quantization_noice_ratio(reference, other))


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    if scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (q.astype(np.float64) - zero.astype(np.float64)) * scale.astype(np.float64)


def _quantize(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    if scale.size > 1:
        shape = [1] * w.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    info = np.iinfo(zero.dtype)
    return np.clip(np.rint(w / scale) + zero.astype(np.float64), info.min, info.max)


def _weight_errors(quant_model: Any, fp32_model: Any) -> dict[str, tuple[float, str]]:
    """Weight name -> (SQNR in dB, its tensor in the quantized graph) for every constant weight behind a DQ.

    CPU form: int8 initializer -> DQ, compared with the FP32 model's initializer of the same name.  GPU form:
    float initializer -> Q -> DQ (the pair TensorRT wants), compared with that float initializer.
    """
    numpy_helper = lazy_import("onnx.numpy_helper", purpose="locating the worst quantized layer")
    inits = {i.name: i for i in quant_model.graph.initializer}
    fp32_inits = {i.name: i for i in fp32_model.graph.initializer}
    producers = {o: n for n in quant_model.graph.node for o in n.output}

    def array(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    errors = {}
    for node in quant_model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[1] not in inits:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        scale = array(node.input[1])
        source = node.input[0]
        if source in inits:  # int weight -> DQ
            q = array(source)
            zero = array(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros_like(scale, q.dtype)
            name = source[: -len("_quantized")] if source.endswith("_quantized") else source
            if name not in fp32_inits:
                continue
            reference = numpy_helper.to_array(fp32_inits[name]).astype(np.float64)
            errors[name] = (_sqnr(reference, _dequantize(q, scale, zero, axis)), source)
        elif source in producers and producers[source].op_type == "QuantizeLinear":  # float weight -> Q -> DQ
            qnode = producers[source]
            if qnode.input[0] not in inits or qnode.input[1] not in inits:
                continue
            w = array(qnode.input[0]).astype(np.float64)
            qscale = array(qnode.input[1])
            zero = array(qnode.input[2]) if len(qnode.input) > 2 and qnode.input[2] else np.zeros(qscale.shape, np.uint8)
            qaxis = next((a.i for a in qnode.attribute if a.name == "axis"), 1)
            q = _quantize(w, qscale, zero, qaxis)
            dq_zero = array(node.input[2]) if len(node.input) > 2 and node.input[2] else zero
            errors[qnode.input[0]] = (_sqnr(w, _dequantize(q, scale, dq_zero, axis)), qnode.input[0])
    return errors


def _consumers(model: Any, tensor: str) -> list[Any]:
    """The compute nodes that read ``tensor`` through its Q/DQ nodes (or directly)."""
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    found, frontier, seen = [], [tensor], set()
    while frontier:
        name = frontier.pop()
        for node in readers.get(name, []):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                frontier.extend(node.output)
            else:
                found.append(node)
    return found


def _activation_errors(fp32: Path, quant: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Per activation: ``qdq_err`` (SQNR of its own Q/DQ) and ``xmodel_err`` (SQNR vs the FP32 model's tensor)."""
    debug = lazy_import("onnxruntime.quantization.qdq_loss_debug", purpose="locating the worst quantized layer")
    with tempfile.TemporaryDirectory(prefix="edge-qdq-debug-") as tmp:
        augmented = {}
        for label, path in (("quant", quant), ("fp32", fp32)):
            augmented[label] = str(Path(tmp) / f"{label}.onnx")
            debug.modify_model_output_intermediate_tensors(str(path), augmented[label])
        acts = {label: debug.collect_activations(p, CalibrationReader(feeds, source="held-out set"))
                for label, p in augmented.items()}
    matching = debug.create_activation_matching(acts["quant"], acts["fp32"])
    for pair in matching.values():
        pair.setdefault("float", [])  # a tensor the preprocessing renamed has no FP32 twin: qdq_err only
    return debug.compute_activation_error(matching)


def locate_worst_layer(fp32_path: str | Path, quant_path: str | Path, feeds: Iterable[Mapping[str, Any]], *,
                       samples: int = DEBUG_SAMPLES, top: int = 5) -> dict[str, Any] | None:
    """The quantized tensor (activation or weight) with the lowest SQNR, the nodes that read it, and a ranking.

    Returns None for a graph without static Q/DQ nodes (dynamic quantization, FP16).
    """
    onnx = lazy_import("onnx", purpose="locating the worst quantized layer")
    fp32 = _existing(fp32_path, "FP32 ONNX model")
    quant = _existing(quant_path, "quantized ONNX model")
    held = list(feeds.feeds if isinstance(feeds, CalibrationReader) else feeds)[:samples]
    quant_model, fp32_model = onnx.load(str(quant)), onnx.load(str(fp32))
    if not any(n.op_type == "DequantizeLinear" for n in quant_model.graph.node):
        return None
    candidates = [{"tensor": name, "kind": "weight", "sqnr_db": err, "_graph": graph_name}
                  for name, (err, graph_name) in _weight_errors(quant_model, fp32_model).items()]
    for name, err in _activation_errors(fp32, quant, held).items():
        entry = {"tensor": name, "kind": "activation", "sqnr_db": float(err["qdq_err"])}
        if "xmodel_err" in err:
            entry["fp32_vs_quant_sqnr_db"] = float(err["xmodel_err"])
        candidates.append(entry)
    if not candidates:
        return None
    candidates.sort(key=lambda c: c["sqnr_db"])
    for entry in candidates[:top]:
        nodes = _consumers(quant_model, entry.pop("_graph", entry["tensor"]))
        entry["nodes"] = [n.name for n in nodes]
        entry["op_types"] = sorted({n.op_type for n in nodes})
        entry["sqnr_db"] = round(entry["sqnr_db"], 2)
        if "fp32_vs_quant_sqnr_db" in entry:
            entry["fp32_vs_quant_sqnr_db"] = round(entry["fp32_vs_quant_sqnr_db"], 2)
    worst = {k: v for k, v in candidates[0].items() if not k.startswith("_")}
    worst["ranking"] = [{k: c[k] for k in ("tensor", "kind", "sqnr_db")} for c in candidates[:top]]
    worst["samples"] = len(held)
    return worst


def _describe(worst: dict[str, Any] | None) -> str:
    if worst is None:
        return "no per-layer figures (the graph has no static Q/DQ nodes)"
    nodes = ", ".join(worst.get("nodes", [])[:3]) or "no compute node"
    return (f"worst layer: {nodes} ({'/'.join(worst.get('op_types', [])) or '?'}), {worst['kind']} "
            f"{worst['tensor']!r} at {worst['sqnr_db']:.1f} dB SQNR")


# --------------------------------------------------------------------------------------------------------- gate


def _failures(report: FidelityReport, min_agreement: float, min_cosine: float) -> list[str]:
    if report.kind == "classifier":
        head = report.fused or FUSED_HEAD
        got = report.figures[head]["agreement"]
        return [f"top-1 agreement of head {head!r} {got:.4f} < {min_agreement}"] if got < min_agreement else []
    return [f"mean cosine of output {name!r} {fig['mean_cosine']:.5f} < {min_cosine} (min {fig['min_cosine']:.4f})"
            for name, fig in report.figures.items() if fig["mean_cosine"] < min_cosine]


def evaluate(report: FidelityReport, *, min_agreement: float = MIN_AGREEMENT,
             min_cosine: float = MIN_COSINE) -> tuple[dict[str, Any], list[str]]:
    """The figures of ``report`` (JSON-ready) with ``passed`` and the thresholds, and the failures as sentences."""
    failures = _failures(report, min_agreement, min_cosine)
    figures = report.to_dict()
    figures.update({"passed": not failures, "min_agreement": min_agreement, "min_cosine": min_cosine})
    return figures, failures


def failure_line(report: FidelityReport, failures: Sequence[str]) -> str:
    return (f"fidelity gate failed for {report.quant_path.name} over {report.samples} held-out samples: "
            f"{'; '.join(failures)}")


def gate(report: FidelityReport, *, min_agreement: float = MIN_AGREEMENT, min_cosine: float = MIN_COSINE,
         force: bool = False) -> dict[str, Any]:
    """Hold ``report`` to the thresholds; return its figures (JSON-ready) with ``passed`` and the thresholds.

    On a failure the worst layer is located and named; :class:`FidelityError` is raised unless ``force``, which
    logs a warning and returns the figures with ``"forced": true``.
    """
    figures, failures = evaluate(report, min_agreement=min_agreement, min_cosine=min_cosine)
    if not failures:
        log.info("fidelity gate passed: %s", report.quant_path.name)
        return figures
    if report.worst_layer is None and report.feeds:
        report.worst_layer = locate_worst_layer(report.fp32_path, report.quant_path, report.feeds)
        figures["worst_layer"] = report.worst_layer
    message = f"{failure_line(report, failures)}; {_describe(report.worst_layer)}"
    worst_nodes = (report.worst_layer or {}).get("nodes", [])
    hint = ("recalibrate on more representative samples (the calibration recipe), keep the worst layer in FP32 "
            f"(exclude_nodes={worst_nodes[:1]}), choose FP16 for this network, pass --fallback to run this network "
            "in FP32, or --force to keep it anyway")
    if force:
        log.warning("%s; kept because of --force", message)
        figures["forced"] = True
        return figures
    raise FidelityError(f"{message}; {hint}")
