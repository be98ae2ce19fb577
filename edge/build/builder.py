"""``edge-build``: export every network of a profile, quantize it, gate its fidelity, build TensorRT engines,
and write ``engines/<profile>/<target>/`` with its manifest."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge._lazy import lazy_import
from edge.runtime import manifest as mf
from edge.fileio import sha256_file
from edge.build.sources import EXPORTERS, MTCNN_NETS, NETWORKS, TOKENIZER_DIR
from edge.errors import InputError
from edge.profile import Profile, load_profile, profile_hash

log = logging.getLogger("edge")

PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = ("cpu", "gpu")
#: Largest batch (or, for P-Net, image side) each network's TensorRT profile accepts.
TRT_MAX_BATCH = {"rnet": 256, "onet": 64, "resnet18": 64, "text": 4, "audio": 2, "lfmim": 8}


@dataclass(frozen=True)
class BuildOptions:
    profile: str = "starter"
    precision: str = "int8"
    target: str = "cpu"
    out_root: str = "engines"
    random_weights: bool = False
    calibration_data: str | None = None
    recipes: str | None = None
    force: bool = False
    min_agreement: float = 0.99
    min_cosine: float = 0.99
    threads: int | None = None
    tensorrt: str = "auto"  # auto: build plans when tensorrt and a GPU are present; "off": ONNX only
    progress: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.target not in TARGETS:
            raise InputError(f"--target {self.target!r}: expected one of {', '.join(TARGETS)}")
        if self.tensorrt not in ("auto", "off"):
            raise InputError(f"--tensorrt {self.tensorrt!r}: expected auto or off")


def policy_name(network: str, profile: Profile) -> str:
    """The :data:`~edge.build.quantize.PRECISION_POLICY` key of a network: the encoder kind for text and audio, a
    small LFMIM (d < 128, the starter's) apart from the paper-sized one, else the network's name."""
    if network == "lfmim" and profile.lfmim.d_model < 128:
        return "lfmim-small"
    return {"text": profile.text.encoder, "audio": profile.audio.encoder}.get(network, network)


def chosen_precision(network: str, profile: Profile, opts: BuildOptions) -> str:
    """fp32 / fp16 builds use that precision everywhere; int8 follows the per-network policy of the target."""
    if opts.precision != "int8":
        return opts.precision
    from edge.build.quantize import policy_for

    policy = policy_for(policy_name(network, profile))
    return policy.cpu if opts.target == "cpu" else policy.gpu


def io_shapes(path: Path) -> dict[str, dict[str, list]]:
    onnx = lazy_import("onnx", purpose="reading ONNX graphs")
    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}

    def dims(value):
        return [d.dim_param or d.dim_value or None for d in value.type.tensor_type.shape.dim]

    return {"inputs": {v.name: dims(v) for v in graph.input if v.name not in init},
            "outputs": {v.name: dims(v) for v in graph.output}}


def _file_entry(out: Path, path: Path) -> dict[str, Any]:
    return {"file": path.name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


class Builder:
    def __init__(self, opts: BuildOptions) -> None:
        self.opts = opts
        self.profile = load_profile(opts.profile)
        self.out = Path(opts.out_root) / self.profile.name / opts.target
        self.networks: dict[str, dict[str, Any]] = {}
        self.fp32: dict[str, Path] = {}
        self.extra: dict[str, Any] = {}
        self.tqdm = lazy_import("tqdm").tqdm

    # -- 1. export -----------------------------------------------------------------------------------------
    def export(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        groups = list(EXPORTERS)
        for group in self.tqdm(groups, desc="export to ONNX", unit="network", disable=not self.opts.progress):
            report, details = EXPORTERS[group](self.profile, self.out, self.opts.random_weights)
            if group == "mtcnn":
                for name in MTCNN_NETS:
                    self.fp32[name] = Path(report[name])
                    self.networks[name] = {"source": details["source"], "export": {"max_abs_diff": None}}
            else:
                self.fp32[group] = Path(report.path)
                self.networks[group] = {"source": details.pop("source"), "export": report.to_dict(), **details}

    # -- 2. calibration feeds ------------------------------------------------------------------------------
    def feeds(self) -> dict[str, list[dict[str, np.ndarray]]]:
        from edge.build.calibration import gather_material, load_recipes, resolve_data_dir, vision_feeds
        from edge.features.audio_pre import fit_frames, prepare_waveform
        from edge.features.text_pre import encode_texts
        from edge.features.vision_pre import normalize_faces, sample_frames
        from edge.runtime.onnxruntime_runner import OrtRunner

        p = self.profile
        use_demo = self.opts.calibration_data == "demo"
        if not use_demo:
            try:
                data = resolve_data_dir(self.opts.calibration_data)
            except InputError:
                if self.opts.calibration_data or self.missing_prequantized():
                    raise
                use_demo = True
                log.warning("no calibration data on this machine: profile %r ships its statically quantized networks "
                            "(calibrated on real data when it was packaged); checking every INT8 variant against "
                            "FP32 on the demo clip", p.name)
        if use_demo:  # build() has refused this where a static INT8 network would need calibrating
            from edge.build.demo_material import demo_material, demo_recipes

            recipes, data = demo_recipes(), "demo"
            material = demo_material(window_samples=p.audio.window_samples, sample_rate=p.audio.sample_rate)
        else:
            recipes = load_recipes(self.opts.recipes)
            log.info("calibration data from %s (recipe %s)", data, recipes.source)
            material = gather_material(recipes, data, window_samples=p.audio.window_samples,
                                       needs={"vision", "audio", "text"})
        feeds, faces = vision_feeds(self.fp32, material, recipes, face_size=p.vision.face_size,
                                    min_face=p.vision.min_face, threads=self.opts.threads, align=p.vision.align)
        if not feeds["resnet18"]:
            raise InputError(f"no face found in the calibration videos under {data}; point the recipe's [vision] "
                             "videos at clips that show faces")
        tokenizer = lazy_import("tokenizers").Tokenizer.from_file(str(self.out / TOKENIZER_DIR / "tokenizer.json"))
        feeds["text"] = [encode_texts(tokenizer, [t], length=p.text.tokens) for t in material.texts]
        normalize = bool(self.networks["audio"].get("do_normalize", True))
        block = p.audio.block_samples
        blocks = [[w[i:i + block] for i in range(0, w.size - block + 1, block)] for w in material.windows]
        feeds["audio"] = [{"waveform": prepare_waveform(b[0], p.audio.sample_rate, do_normalize=normalize)[None]}
                          for b in blocks]
        # LFMIM: the FP32 extractors' features of the same samples.
        n = min(len(feeds["text"]), len(feeds["audio"]))
        videos = [f for f in faces if f]
        with OrtRunner(self.fp32["text"], threads=self.opts.threads) as text, \
                OrtRunner(self.fp32["audio"], threads=self.opts.threads) as audio, \
                OrtRunner(self.fp32["resnet18"], threads=self.opts.threads) as resnet:
            vision_feats = []
            for video in videos:
                picks = sample_frames(len(video), p.vision.segments, p.vision.per_segment)
                batch = normalize_faces(np.stack([video[i] for i in picks]), size=p.vision.face_size)
                vision_feats.append(resnet.infer({"faces": batch})["features"])
            text_feats, audio_feats = [], []
            for i in self.tqdm(range(n), desc="LFMIM calibration features", disable=not self.opts.progress, leave=False):
                text_feats.append(text.infer(feeds["text"][i])["hidden"].astype(np.float32))
                frames = [audio.infer({"waveform": prepare_waveform(b, p.audio.sample_rate, do_normalize=normalize)[None]})
                          ["hidden"][0] for b in blocks[i]]
                audio_feats.append(fit_frames(np.concatenate(frames), p.audio.frames)[None].astype(np.float32))
            # LFMIM's inputs are cheap to combine: text i with audio and vision of other samples gives the gate
            # enough held-out samples for a 99 % agreement figure to mean something (one flip in 16 would fail it).
            total = recipes.calibrate + recipes.lfmim_holdout
            feeds["lfmim"] = [{"text": text_feats[i % n], "audio": audio_feats[(7 * i + 3) % n],
                               "vision": vision_feats[(13 * i + 5) % len(vision_feats)][None].astype(np.float32)}
                              for i in range(total)]
        self.extra["calibration"] = {"data": str(data), "recipes": recipes.source, "calibrate": recipes.calibrate,
                                     "holdout": recipes.holdout, "seed": recipes.seed,
                                     "samples": {k: len(v) for k, v in feeds.items()}}
        self._recipes = recipes
        return feeds

    # -- 3. quantize + gate ----------------------------------------------------------------------------------
    def quantize(self, feeds: dict[str, list] | None) -> None:
        from edge.build import quantize as q
        from edge.build.calibration import split_feeds
        from edge.build.fidelity import classifier_agreement, feature_cosine, gate

        for name in self.tqdm(NETWORKS, desc=f"{self.opts.precision} variants", unit="network",
                              disable=not self.opts.progress):
            entry = self.networks[name]
            precision = chosen_precision(name, self.profile, self.opts)
            entry["precision"] = precision
            entry["fp32_onnx"] = _file_entry(self.out, self.fp32[name])
            if precision == "fp32":
                entry["onnx"] = entry["fp32_onnx"]
                continue
            path = self.out / f"{name}.{precision}.{self.opts.target}.onnx"
            holdout_n = self._recipes.lfmim_holdout if name == "lfmim" and feeds else None
            calib, holdout = split_feeds(feeds[name], self._recipes, name, holdout=holdout_n) if feeds else ([], [])
            shipped = self.prequantized(name, precision)
            if shipped is not None:
                import shutil

                shutil.copyfile(shipped, path)
                report = _Prequantized(self.profile.prequantized, shipped.name)
            elif precision == "fp16":
                report = q.convert_fp16(self.fp32[name], path)
            elif precision == "int8-dynamic":
                pol = q.policy_for(policy_name(name, self.profile))
                report = q.quantize_dynamic_matmul(self.fp32[name], path, per_channel=pol.per_channel,
                                                   exclude_nodes=pol.excluded_nodes(self.fp32[name]))
            else:
                pol = q.policy_for(policy_name(name, self.profile))
                reader = q.CalibrationReader(calib, model_path=self.fp32[name], source=f"{name} calibration set")
                report = q.quantize_int8(self.fp32[name], path, reader, target=self.opts.target,
                                         op_types=pol.op_types, network=policy_name(name, self.profile))
            entry["quantization"] = report.to_dict()
            entry["onnx"] = _file_entry(self.out, path)
            if not holdout:
                if not self.opts.force:
                    raise InputError(f"{name}: no held-out data for the fidelity gate; pass --calibration-data DIR "
                                     "or --force to skip the gate")
                entry["fidelity"] = {"passed": None, "skipped": "no calibration data (--force)"}
                continue
            if name == "lfmim":
                fid = classifier_agreement(self.fp32[name], path, holdout)
            else:
                fid = feature_cosine(self.fp32[name], path, holdout)
            entry["fidelity"] = gate(fid, min_agreement=self.opts.min_agreement, min_cosine=self.opts.min_cosine,
                                     force=self.opts.force)

    def prequantized(self, name: str, precision: str) -> Path | None:
        """The profile's shipped ``<name>.<precision>.<target>.onnx`` (static INT8 only), or None."""
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
        return [n for n in NETWORKS if chosen_precision(n, self.profile, self.opts) == "int8"
                and self.prequantized(n, "int8") is None]

    # -- 4. TensorRT -----------------------------------------------------------------------------------------
    def tensorrt(self) -> None:
        if self.opts.target != "gpu" or self.opts.tensorrt == "off":
            return
        from edge.runtime.factory import available_backends

        status = available_backends().get("tensorrt", "unavailable")
        if not status.startswith("available"):
            log.warning("no TensorRT engines built: %s; the ONNX files are ready for `edge-build --target gpu` "
                        "on the device", status)
            self.extra["tensorrt"] = {"built": False, "why": status}
            return
        from edge.build.tensorrt_engine import build_engine
        from edge.runtime.tensorrt_runner import device_info, tensorrt_version

        cache = self.out / "timing.cache"
        for name in self.tqdm(NETWORKS, desc="TensorRT engines", unit="engine", disable=not self.opts.progress):
            entry = self.networks[name]
            onnx_path = self.out / entry["onnx"]["file"]
            plan = self.out / f"{name}.{entry['precision']}.plan"
            build_engine(onnx_path, plan, timing_cache=cache, profiles=self._trt_profiles(name, onnx_path),
                         progress=self.opts.progress)
            entry["plan"] = _file_entry(self.out, plan)
        self.extra["tensorrt"] = {"built": True, "version": tensorrt_version()}
        self.extra["gpu"] = device_info()

    def _trt_profiles(self, name: str, path: Path) -> dict[str, tuple[tuple[int, ...], ...]]:
        profiles = {}
        for inp, dims in io_shapes(path)["inputs"].items():
            if name == "pnet":
                lo, opt, hi = (1, 3, 12, 12), (1, 3, 360, 480), (1, 3, 1080, 1920)
            else:
                fixed = [d if isinstance(d, int) else 1 for d in dims]
                top = TRT_MAX_BATCH.get(name, 8)
                lo, opt, hi = ((1, *fixed[1:]), (max(1, top // 2), *fixed[1:]), (top, *fixed[1:]))
            profiles[inp] = (tuple(lo), tuple(opt), tuple(hi))
        return profiles

    # -- 5. manifest -----------------------------------------------------------------------------------------
    def write_manifest(self, seconds: float) -> Path:
        for name, entry in self.networks.items():
            entry.update(io_shapes(self.out / entry["onnx"]["file"]))
        body = {
            "profile": {"name": self.profile.name, "hash": profile_hash(self.profile), "source": self.profile.source},
            "precision": self.opts.precision, "target": self.opts.target,
            "random_weights": self.opts.random_weights, "source_hash": mf.source_hash(),
            "packages": mf.package_versions(), "tensorrt": self.extra.get("tensorrt", {"built": False}),
            "gpu": self.extra.get("gpu"), "calibration": self.extra.get("calibration"),
            "tokenizer": TOKENIZER_DIR, "audio_do_normalize": self.networks["audio"].get("do_normalize", True),
            "build_seconds": round(seconds, 1), "networks": self.networks,
            "rebuild": mf.rebuild_command(self.opts.profile, self.opts.precision, self.opts.target)
                       + (" --random-weights" if self.opts.random_weights else "")
                       + (f" --out-root {self.opts.out_root}" if str(self.opts.out_root) != "engines" else ""),
        }
        return mf.write_manifest(self.out, body)


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


def build(opts: BuildOptions) -> Path:
    """Run the whole build; returns the manifest path."""
    started = time.perf_counter()
    builder = Builder(opts)
    missing = builder.missing_prequantized()
    if opts.calibration_data == "demo" and missing:
        raise InputError(f"--calibration-data demo only checks networks, it calibrates none; profile "
                         f"{builder.profile.name!r} has no prequantized variant of {', '.join(missing)} for "
                         f"{opts.target}; pass --calibration-data DIR with real clips")
    builder.export()
    needs_data = any(chosen_precision(n, builder.profile, opts) != "fp32" for n in NETWORKS)
    feeds = None
    if needs_data:
        try:
            feeds = builder.feeds()
        except InputError as exc:
            if not opts.force or "calibration" not in str(exc):
                raise
            log.warning("%s; building without a fidelity gate (--force)", exc)
    builder.quantize(feeds)
    builder.tensorrt()
    return builder.write_manifest(time.perf_counter() - started)
