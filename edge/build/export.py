"""ONNX export with a parity check against PyTorch (build path; torch, onnx, onnxruntime).

:func:`export_onnx` exports a module with the TorchScript-based exporter (``dynamo=False``: it handles the
transformers models and fixed/dynamic axes reliably), checks the graph with ``onnx.checker``, then runs the file in
ONNX Runtime (CPU) on the example inputs and on a second batch size and compares every output with PyTorch.
A difference above the network's tolerance raises :class:`ParityError`; the file is only moved into place when the
check passes.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from edge._lazy import lazy_import
from edge.errors import EdgeError, InputError
from edge.fileio import atomic_path

log = logging.getLogger("edge")

#: Default ONNX opset (TensorRT 10 and ONNX Runtime 1.17+ both read it).
DEFAULT_OPSET = 17
#: Parity tolerances (absolute, relative) per network, FP32 ONNX Runtime 1.32 CPU vs PyTorch 2.13 eager FP32; an
#: output passes when |onnx - torch| <= atol + rtol * |torch| everywhere.  Measured at paper size with random weights
#: (batches 2 and 5): ResNet18 (B, 3, 224, 224) 2.9e-6 (largest |x| 11); BERT-base (B, 80) 2.9e-6 (largest |x| 4.7);
#: wav2vec2-base (B, 64000) 5.3e-6 (largest |x| 5.4).  1e-4 leaves a 20x margin for trained weights.
TOLERANCES: dict[str, tuple[float, float]] = {
    "resnet18": (1e-4, 0.0),
    "bert": (1e-4, 0.0),
    "wav2vec2": (1e-4, 0.0),
}


class ParityError(EdgeError, RuntimeError):
    """An exported network's ONNX Runtime outputs differ from PyTorch's by more than its tolerance."""


@dataclass(frozen=True)
class OutputParity:
    """How one output of one batch compared: largest absolute difference and the tolerance it was held to."""

    output: str
    batch: int
    shape: tuple[int, ...]
    max_abs_diff: float
    max_abs_value: float
    within: bool


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and measured."""

    name: str
    path: Path
    opset: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    #: ONNX graph shapes: ints for static dims, strings for dynamic ones.
    input_shapes: dict[str, tuple[int | str, ...]]
    output_shapes: dict[str, tuple[int | str, ...]]
    atol: float
    rtol: float
    parity: tuple[OutputParity, ...] = field(default_factory=tuple)
    export_seconds: float = 0.0
    size_bytes: int = 0

    @property
    def max_abs_diff(self) -> float:
        return max((p.max_abs_diff for p in self.parity), default=0.0)

    @property
    def batches(self) -> tuple[int, ...]:
        return tuple(sorted({p.batch for p in self.parity}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": str(self.path), "opset": self.opset,
            "inputs": {k: list(v) for k, v in self.input_shapes.items()},
            "outputs": {k: list(v) for k, v in self.output_shapes.items()},
            "atol": self.atol, "rtol": self.rtol, "max_abs_diff": self.max_abs_diff, "batches": list(self.batches),
            "export_seconds": round(self.export_seconds, 3), "size_bytes": self.size_bytes,
        }


def _graph_shapes(values: Any) -> dict[str, tuple[int | str, ...]]:
    shapes = {}
    for v in values:
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in dims)
    return shapes


def _fix_static_dims(onnx: Any, path: Path, inputs: Sequence[Any], module: Any, input_names: Sequence[str],
                     output_names: Sequence[str], dynamic_axes: Mapping[str, Mapping[int, str]]) -> Any:
    """Write the example's sizes into every axis not named in ``dynamic_axes`` (the tracer may leave some symbolic)."""
    torch = lazy_import("torch")
    with torch.no_grad():
        outs = module(*inputs)
    outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
    sizes = {n: tuple(x.shape) for n, x in zip([*input_names, *output_names], [*inputs, *outs])}
    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        if value.name not in sizes:
            continue
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if axis in dynamic_axes.get(value.name, {}):
                dim.dim_param = dynamic_axes[value.name][axis]
            elif axis < len(sizes[value.name]):
                dim.dim_value = int(sizes[value.name][axis])
    onnx.save(model, str(path))
    return model.graph


def _other_batch(inputs: Sequence[Any], dynamic: Sequence[bool]) -> tuple[list[Any], int]:
    """A second batch of a different size: the example rows in reverse order, repeated to 2B + 1 rows."""
    torch = lazy_import("torch")
    batch = int(inputs[0].shape[0])
    size = 2 * batch + 1
    order = torch.arange(size - 1, -1, -1) % batch
    return [x[order] if dyn else x for x, dyn in zip(inputs, dynamic)], size


def _compare(name: str, outputs: Sequence[str], ref: Sequence[Any], got: Sequence[Any], batch: int,
             atol: float, rtol: float) -> list[OutputParity]:
    np = lazy_import("numpy")
    results = []
    for out_name, r, g in zip(outputs, ref, got):
        r = r.detach().cpu().numpy()
        if r.shape != g.shape:
            raise ParityError(
                f"{name}: ONNX output {out_name!r} has shape {g.shape} at batch {batch}, PyTorch gives {r.shape}"
            )
        diff = np.abs(g.astype(np.float64) - r.astype(np.float64))
        within = bool(np.all(diff <= atol + rtol * np.abs(r)))
        results.append(OutputParity(out_name, batch, tuple(r.shape), float(diff.max(initial=0.0)),
                                    float(np.abs(r).max(initial=0.0)), within))
    return results


def check_parity(module: Any, path: str | Path, inputs: Sequence[Any], *, name: str, input_names: Sequence[str],
                 output_names: Sequence[str], atol: float, rtol: float = 0.0) -> list[OutputParity]:
    """Run ``path`` in ONNX Runtime (CPU) and ``module`` in PyTorch on ``inputs``; raise :class:`ParityError` on a gap."""
    torch = lazy_import("torch")
    ort = lazy_import("onnxruntime", purpose="checking exported ONNX files")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {n: x.detach().cpu().numpy() for n, x in zip(input_names, inputs)}
    got = session.run(list(output_names), feeds)
    with torch.no_grad():
        ref = module(*inputs)
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    batch = int(inputs[0].shape[0])
    results = _compare(name, output_names, ref, got, batch, atol, rtol)
    for p in results:
        if not p.within:
            raise ParityError(
                f"{name}: ONNX Runtime and PyTorch disagree on output {p.output!r} at batch {p.batch}: max abs diff "
                f"{p.max_abs_diff:.3g} exceeds the tolerance atol={atol:g} + rtol={rtol:g} * |x| "
                f"(largest |x| {p.max_abs_value:.3g}); the exported graph is wrong or the tolerance is too tight"
            )
    return results


def export_onnx(
    module: Any,
    example_inputs: Sequence[Any],
    path: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    opset: int = DEFAULT_OPSET,
    atol: float | None = None,
    rtol: float | None = None,
    name: str | None = None,
) -> ExportReport:
    """Export ``module`` to ``path`` and check it against PyTorch at the example batch size and at another one.

    ``example_inputs`` are torch tensors whose first dimension is the batch; ``dynamic_axes`` names the axes that
    stay dynamic (usually ``{name: {0: "batch"}}`` for every input and output; every other axis is fixed to the
    example's size).  ``atol`` / ``rtol`` default to ``TOLERANCES[name]`` (else 1e-4 absolute).  The file appears
    at ``path`` only after both checks pass.
    """
    torch = lazy_import("torch", purpose="ONNX export")
    onnx = lazy_import("onnx", purpose="ONNX export")
    name = name or type(module).__name__
    default_atol, default_rtol = TOLERANCES.get(name, (1e-4, 0.0))
    atol = default_atol if atol is None else float(atol)
    rtol = default_rtol if rtol is None else float(rtol)
    inputs = list(example_inputs)
    if len(inputs) != len(input_names) or not inputs:
        raise InputError(f"{name}: {len(inputs)} example inputs but {len(input_names)} input names")
    unknown = sorted(set(dynamic_axes) - set(input_names) - set(output_names))
    if unknown:
        raise InputError(f"{name}: dynamic_axes names unknown tensors {unknown}; known: {[*input_names, *output_names]}")
    if opset < DEFAULT_OPSET:
        raise InputError(f"{name}: opset {opset} is too old; use {DEFAULT_OPSET} or newer")
    module = module.eval()
    path = Path(path)
    start = time.perf_counter()
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            torch.onnx.export(
                module, tuple(inputs), str(tmp), dynamo=False, opset_version=opset,
                input_names=list(input_names), output_names=list(output_names),
                dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()}, do_constant_folding=True,
            )
        for w in caught:
            log.debug("%s export: %s: %s", name, w.category.__name__, str(w.message).splitlines()[0])
        exported = time.perf_counter() - start
        graph = _fix_static_dims(onnx, tmp, inputs, module, input_names, output_names, dynamic_axes)
        onnx.checker.check_model(str(tmp))
        kwargs = dict(name=name, input_names=input_names, output_names=output_names, atol=atol, rtol=rtol)
        parity = check_parity(module, tmp, inputs, **kwargs)
        dynamic = [0 in dynamic_axes.get(n, {}) for n in input_names]
        if any(dynamic):
            other, size = _other_batch(inputs, dynamic)
            parity += check_parity(module, tmp, other, **kwargs)
        else:
            log.info("%s: no dynamic batch axis; parity checked at batch %d only", name, inputs[0].shape[0])
    report = ExportReport(
        name=name, path=path, opset=opset, input_names=tuple(input_names), output_names=tuple(output_names),
        input_shapes=_graph_shapes(graph.input), output_shapes=_graph_shapes(graph.output), atol=atol, rtol=rtol,
        parity=tuple(parity), export_seconds=exported, size_bytes=path.stat().st_size,
    )
    log.info("%s exported to %s (opset %d): max abs diff %.3g vs PyTorch over batches %s (atol %g, rtol %g)",
             name, path, opset, report.max_abs_diff, report.batches, atol, rtol)
    return report


# ------------------------------------------------------------------------------------------ the three extractors


def _batch_axes(*names: str) -> dict[str, dict[int, str]]:
    return {n: {0: "batch"} for n in names}


def export_resnet18(model: Any, path: str | Path, *, batch: int = 2, seed: int = 0) -> ExportReport:
    """ResNet18 features: ``faces`` float32 (batch, 3, 224, 224) -> ``features`` (batch, 512)."""
    torch = lazy_import("torch", purpose="ONNX export")
    faces = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    return export_onnx(model, [faces], path, input_names=["faces"], output_names=["features"],
                       dynamic_axes=_batch_axes("faces", "features"), name="resnet18")


def export_text_encoder(bert: Any, path: str | Path, *, length: int = 80, batch: int = 2, seed: int = 0) -> ExportReport:
    """BERT: ``input_ids``, ``attention_mask``, ``token_type_ids`` int64 (batch, 80) -> ``hidden`` (batch, 80, hidden)."""
    torch = lazy_import("torch", purpose="ONNX export")
    from edge.features.text import TextEncoder

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, int(bert.config.vocab_size), (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.int64)
    for row in range(1, batch):  # padded rows, so the graph is traced and checked with a real mask
        mask[row, max(2, length * (batch - row) // batch):] = 0
    names = ["input_ids", "attention_mask", "token_type_ids"]
    return export_onnx(TextEncoder(bert), [ids, mask, torch.zeros_like(ids)], path, input_names=names,
                       output_names=["hidden"], dynamic_axes=_batch_axes(*names, "hidden"), name="bert")


def export_audio_encoder(wav2vec2: Any, path: str | Path, *, samples: int = 64_000, batch: int = 2,
                         seed: int = 0) -> ExportReport:
    """wav2vec2: ``waveform`` float32 (batch, samples) at 16 kHz -> ``hidden`` (batch, num_frames(samples), hidden)."""
    torch = lazy_import("torch", purpose="ONNX export")
    from edge.features.audio import AudioEncoder

    waveform = torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))
    return export_onnx(AudioEncoder(wav2vec2), [waveform], path, input_names=["waveform"], output_names=["hidden"],
                       dynamic_axes=_batch_axes("waveform", "hidden"), name="wav2vec2")
