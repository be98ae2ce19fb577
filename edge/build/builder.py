"""``edge-build``: export every network of a profile to FP32 ONNX (PyTorch), then make its variants, gate them,
choose per network (:mod:`edge.prepare`, torch-free), build TensorRT engines, and write
``engines/<profile>/<target>/`` with its manifest.

The build is made in a temporary folder beside its destination and renamed into place at the end, so an interrupted
build (Ctrl-C, a failed gate, a crash) leaves no half-written build and an existing one untouched.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from edge.build.sources import EXPORTERS, MTCNN_NETS
from edge.errors import InputError
from edge.fileio import atomic_dir
from edge.prepare.networks import NETWORKS, PRECISIONS, TARGETS, PrepareOptions, Preparer, file_entry, io_shapes
from edge.profile import load_profile
from edge.runtime import manifest as mf

log = logging.getLogger("edge")

#: Largest batch (or, for P-Net, image side) each network's TensorRT profile accepts.
TRT_MAX_BATCH = {"rnet": 256, "onet": 64, "resnet18": 64, "text": 4, "audio": 2, "lfmim": 8}

__all__ = ["BuildOptions", "Builder", "NETWORKS", "PRECISIONS", "TARGETS", "build"]


@dataclass(frozen=True)
class BuildOptions(PrepareOptions):
    profile: str = "starter"
    out_root: str = "engines"
    random_weights: bool = False
    calibration_data: str | None = None
    recipes: str | None = None
    tensorrt: str = "auto"  # auto: build plans when tensorrt and a GPU are present; "off": ONNX only

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tensorrt not in ("auto", "off"):
            raise InputError(f"--tensorrt {self.tensorrt!r}: expected auto or off")


class Builder(Preparer):
    def __init__(self, opts: BuildOptions, out: Path | None = None) -> None:
        profile = load_profile(opts.profile)
        self.final = Path(opts.out_root) / profile.name / opts.target
        super().__init__(profile, out or self.final, opts)
        self.opts: BuildOptions = opts

    # -- 1. export -----------------------------------------------------------------------------------------
    def export(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for group in self.tqdm(list(EXPORTERS), desc="export to ONNX", unit="network", disable=not self.opts.progress):
            report, details = EXPORTERS[group](self.profile, self.out, self.opts.random_weights)
            if group == "mtcnn":
                for name in MTCNN_NETS:
                    self.fp32[name] = Path(report[name])
                    self.networks[name] = {"source": details["source"], "export": {"max_abs_diff": None}}
            else:
                self.fp32[group] = Path(report.path)
                self.networks[group] = {"source": details.pop("source"), "export": report.to_dict(), **details}

    # -- 2. calibration feeds ------------------------------------------------------------------------------
    def gather(self) -> dict[str, list]:
        from edge.build.calibration import gather_material, load_recipes, resolve_data_dir
        from edge.prepare.demo_material import DEMO_SOURCE, demo_material, demo_split

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
            material = demo_material(window_samples=p.audio.window_samples, sample_rate=p.audio.sample_rate)
            return self.feeds(material, demo_split(), source=DEMO_SOURCE)
        recipes = load_recipes(self.opts.recipes)
        log.info("calibration data from %s (recipe %s)", data, recipes.source)
        material = gather_material(recipes, data, window_samples=p.audio.window_samples,
                                   needs={"vision", "audio", "text"})
        feeds = self.feeds(material, recipes.split, source=str(data))
        self.extra["calibration"]["recipes"] = recipes.source
        return feeds

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
            entry["plan"] = file_entry(plan)
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
        o = self.opts
        rebuild = (mf.rebuild_command(o.profile, o.precision, o.target) + (" --random-weights" if o.random_weights else "")
                   + (f" --out-root {o.out_root}" if str(o.out_root) != "engines" else ""))
        body = self.manifest_body(rebuild=rebuild, seconds=seconds, random_weights=o.random_weights,
                                  made_by="edge-build", tensorrt=self.extra.get("tensorrt", {"built": False}),
                                  gpu=self.extra.get("gpu"))
        return mf.write_manifest(self.out, body)


def build(opts: BuildOptions) -> Path:
    """Run the whole build into a temporary folder, then move it into place; returns the manifest path."""
    started = time.perf_counter()
    probe = Builder(opts)
    missing = probe.missing_prequantized()
    if opts.calibration_data == "demo" and missing:
        raise InputError(f"--calibration-data demo only checks networks, it calibrates none; profile "
                         f"{probe.profile.name!r} has no prequantized variant of {', '.join(missing)} for "
                         f"{opts.target}; pass --calibration-data DIR with real clips")
    with atomic_dir(probe.final) as tmp:
        builder = Builder(opts, out=tmp)
        builder.export()
        feeds = None
        if builder.needs_feeds():
            try:
                feeds = builder.gather()
            except InputError as exc:
                if not (opts.force or opts.fallback) or "calibration" not in str(exc):
                    raise
                log.warning("%s; building without a fidelity gate (%s)", exc, "--force" if opts.force else "--fallback")
        builder.quantize(feeds)
        builder.tensorrt()
        builder.write_manifest(time.perf_counter() - started)
    return probe.final / mf.MANIFEST
