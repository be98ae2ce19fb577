"""Export MTCNN's P-Net, R-Net and O-Net to ONNX with a parity check against torch (build path).

Opset 17. P-Net has a dynamic batch and dynamic height/width (it runs on every level of the image pyramid);
R-Net (24 x 24) and O-Net (48 x 48) have a dynamic batch. Each file is checked at export time against the
torch network on ONNX Runtime (CPU): the largest absolute difference over every output must be at most
:data:`PARITY_ATOL` (1e-4), else :class:`~edge.errors.CheckpointError` is raised and the file removed.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from edge._lazy import lazy_import
from edge.errors import CheckpointError
from edge.features.mtcnn import INPUT_NAME, NET_INPUT_SIZE, OUTPUT_NAMES

log = logging.getLogger("edge")

OPSET = 17
#: largest absolute difference allowed between torch and ONNX Runtime on any output, at export time
PARITY_ATOL = 1e-4
#: P-Net is checked at these (height, width) sizes, besides the one it is traced at
PNET_CHECK_SIZES = ((12, 12), (97, 131), (240, 320))


def _dynamic_axes(name: str) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {INPUT_NAME: {0: "batch"}}
    if name == "pnet":
        axes[INPUT_NAME].update({2: "height", 3: "width"})
        for out in OUTPUT_NAMES[name]:
            axes[out] = {0: "batch", 2: "out_height", 3: "out_width"}
    else:
        for out in OUTPUT_NAMES[name]:
            axes[out] = {0: "batch"}
    return axes


def _check_sizes(name: str) -> list[tuple[int, int, int]]:
    """(batch, height, width) of the inputs each network is checked with."""
    if name == "pnet":
        return [(b, h, w) for b, (h, w) in zip((1, 2, 1), PNET_CHECK_SIZES)]
    side = NET_INPUT_SIZE[name]
    return [(1, side, side), (5, side, side)]


def check_parity(net, onnx_path: Path, shapes: list[tuple[int, int, int]], *, seed: int = 0) -> float:
    """Largest |torch - ONNX Runtime| over all outputs for random inputs of the given (N, H, W) shapes."""
    torch = lazy_import("torch", purpose="MTCNN export")
    ort = lazy_import("onnxruntime", purpose="MTCNN export parity check")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n, h, w in shapes:
        # Inputs in the range the detector feeds: (uint8 - 127.5) / 128.
        x = ((rng.integers(0, 256, size=(n, 3, h, w)) - 127.5) / 128.0).astype(np.float32)
        with torch.no_grad():
            expected = [t.numpy() for t in net(torch.from_numpy(x))]
        got = session.run(None, {INPUT_NAME: x})
        for e, g in zip(expected, got):
            if e.shape != g.shape:
                raise CheckpointError(f"{onnx_path.name}: ONNX output shape {g.shape} != torch {e.shape}")
            worst = max(worst, float(np.max(np.abs(e - g))))
    return worst


def export_net(name: str, net, out_path: Path) -> float:
    """Export one network to ``out_path`` and return its parity figure (max abs difference)."""
    torch = lazy_import("torch", purpose="MTCNN export")
    height, width = (48, 64) if name == "pnet" else (NET_INPUT_SIZE[name],) * 2
    dummy = torch.zeros(1, 3, height, width)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The torch.export-based exporter needs onnxscript, which we do not depend on; the TorchScript
        # exporter handles these plain convnets (and P-Net's dynamic height/width) exactly.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (dummy,),
            str(out_path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES[name]),
            dynamic_axes=_dynamic_axes(name),
            opset_version=OPSET,
            dynamo=False,
        )
    lazy_import("onnx", purpose="MTCNN export").checker.check_model(str(out_path))
    diff = check_parity(net, out_path, _check_sizes(name))
    if not diff <= PARITY_ATOL:
        out_path.unlink(missing_ok=True)
        raise CheckpointError(
            f"{name}: ONNX Runtime differs from torch by {diff:.3g} (> {PARITY_ATOL}); the export was removed"
        )
    log.info("exported %s to %s (max |torch - onnxruntime| = %.2g)", name, out_path, diff)
    return diff


def export_mtcnn(weights_dir: str | Path | None, out_dir: str | Path) -> dict[str, Path]:
    """Export P-Net, R-Net and O-Net to ``out_dir/{pnet,rnet,onet}.onnx``; returns name -> path.

    ``weights_dir`` holds facenet-pytorch's ``pnet.pt``, ``rnet.pt`` and ``onet.pt``; ``None`` looks in an
    installed facenet-pytorch (see :func:`edge.features.mtcnn_nets.find_mtcnn_weights`).
    """
    from edge.features.mtcnn_nets import load_mtcnn_nets

    nets = load_mtcnn_nets(weights_dir)
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for name, net in nets.items():
        path = out / f"{name}.onnx"
        export_net(name, net, path)
        paths[name] = path
    return paths
