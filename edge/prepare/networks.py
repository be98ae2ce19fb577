"""From FP32 ONNX networks to a build folder: the variants the policy asks for, the fidelity gate, the choice per
network on this machine, the gate's held-out feeds and the manifest body (torch-free).

Two front ends share it: ``edge-build`` (:class:`edge.build.builder.Builder`, which exports the FP32 networks from
PyTorch first and builds TensorRT engines after) and the first run of a profile whose networks all ship as ONNX files
(:mod:`edge.prepare.shipped`, the starter on a kiosk with no torch).

Per network the manifest entry records: the FP32 file, the variant made (``variant_onnx``, with how it was quantized),
its fidelity figures and the batch-1 timings of both, the decision (:mod:`edge.prepare.select`) and the file kept
(``onnx``, what the run path opens).  ``gate_feeds.npz`` keeps the held-out feeds of every CPU variant, so that
opening the build on a CPU of another class re-runs the gate there in seconds (:mod:`edge.prepare.recheck`).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.fileio import atomic_path, sha256_file
from edge.prepare import policy as pol
from edge.prepare.feeds import Material, Split, network_feeds, split_feeds
from edge.prepare.fidelity import (FidelityError, classifier_agreement, evaluate, failure_line, feature_cosine, gate)
from edge.prepare.select import decide, time_pair
from edge.profile import Profile

log = logging.getLogger("edge")

NETWORKS = ("pnet", "rnet", "onet", "resnet18", "text", "audio", "lfmim")
PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = ("cpu", "gpu")
SELECTIONS = ("fastest", "asked")
GATE_FEEDS = "gate_feeds.npz"
#: Held-out feeds kept per network for re-running the gate on another CPU (bounded: a few MB per build).
GATE_FEEDS_KEPT = 48


@dataclass(frozen=True)
class PrepareOptions:
    precision: str = "int8"
    target: str = "cpu"
    #: keep a variant that fails the gate (logged, recorded)
    force: bool = False
    #: a variant that fails the gate is replaced by FP32 with one warning line (what the first run does)
    fallback: bool = False
    #: fastest: per network the fastest variant that passes the gate (CPU); asked: the policy's, whenever it passes
    select: str = "fastest"
    min_agreement: float = 0.99
    min_cosine: float = 0.99
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.target not in TARGETS:
            raise InputError(f"--target {self.target!r}: expected one of {', '.join(TARGETS)}")
        if self.select not in SELECTIONS:
            raise InputError(f"--select {self.select!r}: expected one of {', '.join(SELECTIONS)}")
        for name in ("min_agreement", "min_cosine"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected a number in (0, 1]")


def file_entry(path: Path) -> dict[str, Any]:
    return {"file": path.name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def io_shapes(path: Path) -> dict[str, dict[str, list]]:
    onnx = lazy_import("onnx", purpose="reading ONNX graphs")
    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}

    def dims(value):
        return [d.dim_param or d.dim_value or None for d in value.type.tensor_type.shape.dim]

    return {"inputs": {v.name: dims(v) for v in graph.input if v.name not in init},
            "outputs": {v.name: dims(v) for v in graph.output}}


class Preparer:
    """Variants, gate and choice for the FP32 networks in :attr:`fp32` (filled by the front end)."""

    def __init__(self, profile: Profile, out: Path, opts: PrepareOptions) -> None:
        self.profile = profile
        self.out = Path(out)
        self.opts = opts
        self.networks: dict[str, dict[str, Any]] = {}
        self.fp32: dict[str, Path] = {}
        self.extra: dict[str, Any] = {}
        self.tqdm = lazy_import("tqdm").tqdm
        self.split = Split()

    def precision_of(self, name: str) -> str:
        return pol.chosen_precision(name, self.profile, self.opts.precision, self.opts.target)

    # -- shipped static INT8 files ------------------------------------------------------------------------------
    def prequantized(self, name: str, precision: str) -> Path | None:
        """The profile's shipped ``<name>.int8.<target>.onnx`` (static INT8 only), or None."""
        if precision != "int8" or not self.profile.prequantized:
            return None
        from edge.assets import asset_path, is_asset

        ref = f"{self.profile.prequantized.rstrip('/')}/{name}.int8.{self.opts.target}.onnx"
        if not is_asset(ref):
            return Path(ref) if Path(ref).is_file() else None
        try:
            return asset_path(ref)  # checks the SHA-256 that assets.json records
        except InputError as exc:
            if "not found" in str(exc):
                return None
            raise

    def missing_prequantized(self) -> list[str]:
        """Networks this build quantizes statically that the profile does not ship quantized."""
        return [n for n in NETWORKS if self.precision_of(n) == "int8" and self.prequantized(n, "int8") is None]

    def needs_feeds(self) -> bool:
        return any(self.precision_of(n) != "fp32" for n in NETWORKS)

    # -- feeds -----------------------------------------------------------------------------------------------
    def feeds(self, material: Material, split: Split, *, source: str) -> dict[str, list]:
        self.split = split
        feeds = network_feeds(self.fp32, material, split, self.profile, tokenizer_path=self.tokenizer_json,
                              do_normalize=bool(self.networks["audio"].get("do_normalize", True)),
                              threads=self.opts.threads, progress=self.opts.progress, source=source)
        self.extra["calibration"] = {"data": source, "calibrate": split.calibrate, "holdout": split.holdout,
                                     "seed": split.seed, "samples": {k: len(v) for k, v in feeds.items()}}
        return feeds

    @property
    def tokenizer_json(self) -> Path:
        return self.out / "tokenizer" / "tokenizer.json"

    # -- variants, gate, choice ------------------------------------------------------------------------------
    def quantize(self, feeds: dict[str, list] | None) -> None:
        kept: dict[str, list[dict[str, np.ndarray]]] = {}
        for name in self.tqdm(NETWORKS, desc=f"{self.opts.precision} variants", unit="network",
                              disable=not self.opts.progress):
            entry = self.networks[name]
            precision = self.precision_of(name)
            entry["requested"] = precision
            entry["precision"] = precision
            entry["fp32_onnx"] = file_entry(self.fp32[name])
            if precision == "fp32":
                entry["onnx"] = entry["fp32_onnx"]
                continue
            if not feeds and precision == "int8" and self.prequantized(name, precision) is None:
                if not self.opts.fallback:
                    raise InputError(f"{name}: static INT8 needs calibration data; pass --calibration-data DIR, "
                                     "--precision fp32, or --fallback to run it in FP32")
                self._keep(entry, "fp32", f"{name}: static INT8 needs calibration data and there is none here; "
                                          "FP32 kept (fallback)")
                continue
            holdout_n = self.split.lfmim_holdout if name == "lfmim" and feeds else None
            calib, holdout = split_feeds(feeds[name], self.split, name, holdout=holdout_n) if feeds else ([], [])
            path = self.out / f"{name}.{precision}.{self.opts.target}.onnx"
            entry["quantization"] = self._make_variant(name, precision, path, calib).to_dict()
            entry["variant_onnx"] = file_entry(path)
            self._gate_and_choose(name, entry, precision, path, holdout)
            if self.opts.target == "cpu" and holdout:
                kept[name] = holdout[:GATE_FEEDS_KEPT]
        if kept:
            save_gate_feeds(self.out / GATE_FEEDS, kept)

    def _make_variant(self, name: str, precision: str, path: Path, calib: list) -> Any:
        from edge.prepare import quantize as q

        shipped = self.prequantized(name, precision)
        if shipped is not None:
            shutil.copyfile(shipped, path)
            return _Prequantized(self.profile.prequantized, shipped.name)
        policy = pol.policy_for(pol.policy_name(name, self.profile))
        if precision == "fp16":
            return q.convert_fp16(self.fp32[name], path, keep_nodes=policy.fp16_kept_nodes(self.fp32[name]))
        if precision == "int8-dynamic":
            return q.quantize_dynamic_matmul(self.fp32[name], path, per_channel=policy.per_channel,
                                             exclude_nodes=policy.excluded_nodes(self.fp32[name]))
        reader = q.CalibrationReader(calib, model_path=self.fp32[name], source=f"{name} calibration set")
        return q.quantize_int8(self.fp32[name], path, reader, target=self.opts.target, op_types=policy.op_types,
                               network=pol.policy_name(name, self.profile))

    def _gate_and_choose(self, name: str, entry: dict[str, Any], precision: str, path: Path, holdout: list) -> None:
        opts = self.opts
        passed: bool | None
        if not holdout:
            if not (opts.force or opts.fallback):
                raise InputError(f"{name}: no held-out data for the fidelity gate; pass --calibration-data DIR, "
                                 "--fallback to keep FP32, or --force to skip the gate")
            if opts.fallback and not opts.force:
                entry["fidelity"] = {"passed": None, "skipped": "no held-out data"}
                self._keep(entry, "fp32", f"{precision}: no held-out data for the gate; FP32 kept (fallback)")
                return
            entry["fidelity"] = {"passed": None, "skipped": "no calibration data (--force)"}
            passed = None
        else:
            measure = classifier_agreement if name == "lfmim" else feature_cosine
            fid = measure(self.fp32[name], path, holdout, emulate=opts.target == "gpu")
            if opts.fallback and not opts.force:
                entry["fidelity"], failures = evaluate(fid, min_agreement=opts.min_agreement, min_cosine=opts.min_cosine)
                if failures:
                    threshold = opts.min_agreement if fid.kind == "classifier" else opts.min_cosine
                    log.warning("%s: %s (threshold %s); running %s in FP32 instead", name,
                                failure_line(fid, failures), threshold, name)
            else:
                entry["fidelity"] = gate(fid, min_agreement=opts.min_agreement, min_cosine=opts.min_cosine,
                                         force=opts.force)
            passed = bool(entry["fidelity"]["passed"])
        timing = None
        if opts.target == "cpu" and holdout and opts.select == "fastest" and passed is not False:
            timing = time_pair(self.fp32[name], path, holdout[0], threads=1 if name in ("pnet", "rnet", "onet")
                               else opts.threads)
            entry["timing"] = timing
        decision = decide(name, precision, passed=passed, timing=timing, fallback=opts.fallback,
                          forced=bool(entry["fidelity"].get("forced")))
        self._keep(entry, "fp32" if decision.keep == "fp32" else precision, decision.reason)

    def _keep(self, entry: dict[str, Any], precision: str, reason: str) -> None:
        entry["precision"] = precision
        entry["selection"] = {"kept": precision, "reason": reason}
        entry["onnx"] = entry["fp32_onnx"] if precision == "fp32" else entry["variant_onnx"]
        log.info("%s", reason)

    # -- manifest --------------------------------------------------------------------------------------------
    def manifest_body(self, *, rebuild: str, seconds: float, **fields: Any) -> dict[str, Any]:
        """What :func:`edge.runtime.manifest.write_manifest` writes for this build (``fields`` are added as given)."""
        from edge.profile import profile_hash
        from edge.runtime import manifest as mf
        from edge.runtime.cpu import cpu_info

        for entry in self.networks.values():
            entry.update(io_shapes(self.out / entry["onnx"]["file"]))
        return {
            "profile": {"name": self.profile.name, "hash": profile_hash(self.profile), "source": self.profile.source},
            "precision": self.opts.precision, "target": self.opts.target, "source_hash": mf.source_hash(),
            "packages": mf.package_versions(), "cpu": cpu_info(),
            "selection": {"rule": self.opts.select, "fallback": self.opts.fallback, "force": self.opts.force},
            "calibration": self.extra.get("calibration"), "tokenizer": "tokenizer",
            "audio_do_normalize": self.networks["audio"].get("do_normalize", True),
            "gate_feeds": GATE_FEEDS if (self.out / GATE_FEEDS).is_file() else None,
            "build_seconds": round(seconds, 1), **fields, "networks": self.networks, "rebuild": rebuild,
        }


def save_gate_feeds(path: Path, feeds: dict[str, list[dict[str, np.ndarray]]]) -> None:
    arrays = {f"{net}/{i}/{inp}": value for net, items in feeds.items() for i, feed in enumerate(items)
              for inp, value in feed.items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def load_gate_feeds(path: Path) -> dict[str, list[dict[str, np.ndarray]]]:
    out: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            net, index, inp = key.split("/", 2)
            out.setdefault(net, {}).setdefault(int(index), {})[inp] = data[key]
    return {net: [items[i] for i in sorted(items)] for net, items in out.items()}


@dataclass(frozen=True)
class _Prequantized:
    """A network quantized when its profile was packaged (its record is in the asset folder's assets.json)."""

    folder: str
    file: str

    def to_dict(self) -> dict[str, Any]:
        from edge.assets import asset_manifest, is_asset

        record = {}
        if is_asset(self.folder):
            record = asset_manifest(self.folder.split(":", 1)[1].strip("/")).get("files", {}).get(self.file, {})
        return {"method": "prequantized", "file": f"{self.folder}/{self.file}", **record}


__all__ = ["FidelityError", "GATE_FEEDS", "NETWORKS", "PRECISIONS", "PrepareOptions", "Preparer", "TARGETS",
           "file_entry", "io_shapes", "load_gate_feeds", "save_gate_feeds"]
