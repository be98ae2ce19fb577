"""One face-encoder ONNX graph from several: mirrored test-time augmentation and feature concatenation (build side;
needs ``onnx``, not torch).

Every member takes what the run path gives a face encoder -- ``faces`` float32 (B, 3, S, S), ImageNet-normalised RGB
(:func:`edge.features.vision_pre.normalize_faces`) -- and returns ``features`` (B, D_i).  The composed graph keeps that
contract, so the run path, the quantizer and TensorRT see one ordinary face encoder:

- with ``mirror`` (the default), the batch is stacked with its left-right mirror image (a ``Slice`` with step -1
  on the width axis) into (2B, 3, S, S), each member runs once on it, and the two halves of its output are averaged:
  ``0.5 * (f(x) + f(mirror(x)))``, the horizontal-flip test-time augmentation every FER2013 model was trained for;
- the members' (averaged) features are concatenated: ``features`` (B, sum D_i).

The member graphs are copied node for node under a prefix (``m0/``, ``m1/``, ...), so their weights and operators
are unchanged; :func:`check_face_ensemble` runs the composed file and its members in ONNX Runtime and compares.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.fileio import atomic_path

log = logging.getLogger("edge")

INPUT = "faces"
OUTPUT = "features"


def _load(member: "Path | str | object"):
    onnx = lazy_import("onnx", purpose="composing face encoders")
    if isinstance(member, (str, Path)):
        path = Path(member)
        if not path.is_file():
            raise InputError(f"face encoder {path} not found; pass an ONNX file made by scripts/train_starter_vision.py")
        try:
            return onnx.load(str(path)), str(path)
        except Exception as exc:  # noqa: BLE001  (a protobuf parse error names nothing useful)
            raise InputError(f"face encoder {path} is not an ONNX model ({exc.__class__.__name__}); pass an .onnx file") from exc
    return member, getattr(getattr(member, "graph", None), "name", "model")


def _shape(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def compose_face_ensemble(members: Sequence, out: Path | str | None = None, *, mirror: bool = True,
                          name: str = "face_ensemble"):
    """Compose ``members`` (paths or ``onnx.ModelProto``) into one face encoder; write it to ``out`` (atomically)
    when given.  Returns the ``ModelProto``.  Raises :class:`InputError` when a member is not a face encoder (one input
    ``faces`` (B, 3, S, S), one output ``features`` (B, D)) or the members disagree on S."""
    onnx = lazy_import("onnx", purpose="composing face encoders")
    from onnx import TensorProto, compose, helper, numpy_helper

    if not members:
        raise InputError("no face encoders to compose; pass at least one ONNX file")
    loaded = [_load(m) for m in members]
    side, opsets, dims = None, {}, []
    nodes, inits, infos, functions = [], [], [], []
    feeds = INPUT
    if mirror:
        consts = {"mirror/starts": [-1], "mirror/ends": [np.iinfo(np.int64).min], "mirror/axes": [3],
                  "mirror/steps": [-1], "mirror/index0": 0, "mirror/index1": 1}
        inits += [numpy_helper.from_array(np.asarray(v, dtype=np.int64), k) for k, v in consts.items()]
        inits.append(numpy_helper.from_array(np.asarray(0.5, dtype=np.float32), "mirror/half"))
        nodes += [helper.make_node("Slice", [INPUT, "mirror/starts", "mirror/ends", "mirror/axes", "mirror/steps"],
                                   ["mirror/faces"], name="mirror/flip"),
                  helper.make_node("Concat", [INPUT, "mirror/faces"], ["mirror/both"], name="mirror/stack", axis=0)]
        feeds = "mirror/both"
    outputs = []
    for i, (model, label) in enumerate(loaded):
        graph = model.graph
        inputs = [v for v in graph.input if v.name not in {t.name for t in graph.initializer}]
        if [v.name for v in inputs] != [INPUT] or [v.name for v in graph.output] != [OUTPUT]:
            raise InputError(f"{label}: inputs {[v.name for v in inputs]} -> outputs {[v.name for v in graph.output]}, "
                             f"expected [{INPUT!r}] -> [{OUTPUT!r}] (a face encoder exported by this project)")
        shape, out_shape = _shape(inputs[0]), _shape(graph.output[0])
        if len(shape) != 4 or shape[1] != 3 or not isinstance(shape[2], int) or shape[2] != shape[3] \
                or len(out_shape) != 2 or not isinstance(out_shape[1], int) or not out_shape[1]:
            raise InputError(f"{label}: {INPUT} {shape} -> {OUTPUT} {out_shape}, expected (B, 3, S, S) -> (B, D)")
        if side is not None and shape[2] != side:
            raise InputError(f"{label}: faces of side {shape[2]}, the first member takes {side}; "
                             "compose encoders of one face size")
        side = shape[2]
        dims.append(int(out_shape[1]))
        for op in model.opset_import:
            opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
        prefixed = compose.add_prefix(model, prefix=f"m{i}/")
        g = prefixed.graph
        rename = {f"m{i}/{INPUT}": feeds}
        for node in g.node:
            node.input[:] = [rename.get(x, x) for x in node.input]
        nodes += list(g.node)
        inits += list(g.initializer)
        infos += [v for v in g.value_info]
        functions += list(prefixed.functions)
        feat = f"m{i}/{OUTPUT}"
        if mirror:
            d = dims[-1]
            inits.append(numpy_helper.from_array(np.asarray([2, -1, d], dtype=np.int64), f"m{i}/mirror/shape"))
            nodes += [
                helper.make_node("Reshape", [feat, f"m{i}/mirror/shape"], [f"m{i}/mirror/pair"], name=f"m{i}/mirror/pair"),
                helper.make_node("Gather", [f"m{i}/mirror/pair", "mirror/index0"], [f"m{i}/mirror/plain"],
                                 name=f"m{i}/mirror/plain", axis=0),
                helper.make_node("Gather", [f"m{i}/mirror/pair", "mirror/index1"], [f"m{i}/mirror/mirrored"],
                                 name=f"m{i}/mirror/mirrored", axis=0),
                helper.make_node("Add", [f"m{i}/mirror/plain", f"m{i}/mirror/mirrored"], [f"m{i}/mirror/sum"],
                                 name=f"m{i}/mirror/sum"),
                helper.make_node("Mul", [f"m{i}/mirror/sum", "mirror/half"], [f"m{i}/mirror/mean"],
                                 name=f"m{i}/mirror/mean"),
            ]
            feat = f"m{i}/mirror/mean"
        outputs.append(feat)
    nodes.append(helper.make_node("Concat", outputs, [OUTPUT], name="features/concat", axis=1))
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, side, side])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", sum(dims)])],
        initializer=inits, value_info=infos)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
                              functions=functions, producer_name="lfmim-edge face_ensemble")
    model.ir_version = max(m.ir_version for m, _ in loaded)
    model.doc_string = (f"face encoder ensemble of {len(loaded)} member(s) ({', '.join(Path(l).name for _, l in loaded)}), "
                        f"features {dims} concatenated" + (", mirrored test-time augmentation" if mirror else ""))
    onnx.checker.check_model(model)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            onnx.save(model, str(tmp))
        log.info("face ensemble written to %s: %d member(s), %d features", out, len(loaded), sum(dims))
    return model


def reference_features(members: Sequence[Path | str], faces: np.ndarray, *, mirror: bool = True,
                       threads: int = 1) -> np.ndarray:
    """What the composed graph must compute, from the members run one by one in ONNX Runtime."""
    ort = lazy_import("onnxruntime", purpose="checking a composed face encoder")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    parts = []
    for member in members:
        session = ort.InferenceSession(str(member), opts, providers=["CPUExecutionProvider"])
        f = session.run([OUTPUT], {INPUT: faces})[0]
        if mirror:
            f = 0.5 * (f + session.run([OUTPUT], {INPUT: np.ascontiguousarray(faces[..., ::-1])})[0])
        parts.append(f)
    return np.concatenate(parts, axis=1)


def check_face_ensemble(path: Path | str, members: Sequence[Path | str], faces: np.ndarray, *, mirror: bool = True,
                        threads: int = 1) -> float:
    """Max abs difference between the composed file at ``path`` and :func:`reference_features` on ``faces``."""
    ort = lazy_import("onnxruntime", purpose="checking a composed face encoder")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    got = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run([OUTPUT], {INPUT: faces})[0]
    want = reference_features(members, faces, mirror=mirror, threads=threads)
    if got.shape != want.shape:
        raise AssertionError(f"{path}: features {got.shape}, its members give {want.shape}")
    return float(np.abs(got - want).max())
