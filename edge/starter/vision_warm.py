"""Continue training the shipped face encoder: its FP32 ONNX file back into a trainable
:class:`~edge.starter.vision_model.FaceExpressionEncoder` (build path; torch).

The exported graph has every BatchNorm folded into the convolution before it (weights ``W'``, bias ``b'``).  To
train again, :func:`warm_start` copies ``W'`` into each convolution and gives its BatchNorm the statistics of the
convolution's output ``u = W' x`` on real faces (mean ``mu``, variance ``var``) with ``gamma = sqrt(var + eps)`` and
``beta = mu + b'``: in eval mode the network then computes exactly what the ONNX file computes, and in training
mode the batch statistics are close to ``mu`` and ``var``, so training resumes from the shipped function rather
than from scratch.  :func:`fit_head` fits a fresh linear head on the frozen features (the encoder's own head).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.starter.vision_model import ExpressionHead, FaceExpressionEncoder


def onnx_convolutions(path: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of every Conv node of an ONNX graph, in graph order."""
    onnx = lazy_import("onnx", purpose="reading the shipped face encoder")
    numpy_helper = lazy_import("onnx.numpy_helper")
    graph = onnx.load(str(path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    out = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        w = init.get(node.input[1])
        b = init.get(node.input[2]) if len(node.input) > 2 else None
        if w is None:
            raise InputError(f"{path}: Conv {node.name} has no constant weight; not an exported face encoder")
        out.append((w, np.zeros(w.shape[0], np.float32) if b is None else b))
    return out


def conv_bn_pairs(encoder: FaceExpressionEncoder) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, its BatchNorm) in the order the exported graph lists the convolutions (a block's shortcut first)."""
    pairs = [(encoder.conv1, encoder.bn1)]
    for stage in encoder.stages:
        for block in stage:
            if block.downsample is not None:
                pairs.append((block.downsample[0], block.downsample[1]))
            pairs += [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    return pairs


@torch.no_grad()
def warm_start(encoder: FaceExpressionEncoder, path: str | Path, grey: torch.Tensor) -> None:
    """Load ``path``'s folded weights into ``encoder`` with BatchNorm statistics measured on ``grey`` faces
    (B, 1, S, S) in [0, 1] (see the module docstring)."""
    convs = onnx_convolutions(path)
    pairs = conv_bn_pairs(encoder)
    if len(convs) != len(pairs) or any(tuple(w.shape) != tuple(c.weight.shape) for (w, _), (c, _) in zip(convs, pairs)):
        raise InputError(f"{path}: its convolutions {[tuple(w.shape) for w, _ in convs]} do not match the encoder "
                         f"config's {[tuple(c.weight.shape) for c, _ in pairs]}; pass the config it was trained with")
    biases = []
    for (w, b), (conv, bn) in zip(convs, pairs):
        conv.weight.copy_(torch.from_numpy(np.array(w, np.float32)))
        bn.weight.fill_(1.0)
        bn.bias.copy_(torch.from_numpy(np.array(b, np.float32)))
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)  # BN(u) = u + b': the folded graph exactly
        biases.append(torch.from_numpy(np.array(b, np.float32)))
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [conv.register_forward_hook(lambda m, i, o, k=k: stats.__setitem__(k, (o.mean(dim=(0, 2, 3)),
                                                                                    o.var(dim=(0, 2, 3), unbiased=False))))
             for k, (conv, _) in enumerate(pairs)]
    was_training = encoder.training
    encoder.eval()
    try:
        encoder.features_from_grey(grey)
    finally:
        for h in hooks:
            h.remove()
        encoder.train(was_training)
    for k, (conv, bn) in enumerate(pairs):
        mean, var = stats[k]
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(torch.sqrt(var + bn.eps))
        bn.bias.copy_(mean + biases[k])


def fit_head(features: torch.Tensor, labels: torch.Tensor, classes: int, *, dropout: float = 0.3,
             steps: int = 200, weight_decay: float = 1e-4) -> ExpressionHead:
    """A linear head on frozen features, fitted by L-BFGS on the cross-entropy (L2 ``weight_decay``)."""
    head = ExpressionHead(features.shape[1], classes, dropout=dropout)
    opt = torch.optim.LBFGS(head.fc.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head.fc(features), labels) + weight_decay * (head.fc.weight ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head
