"""Open a build (``engines/<profile>/<target>/``) on the run path: check its manifest, open one runner per network.

No torch here.  Per network the TensorRT plan is used where the build has one and TensorRT can run it, else the
build's ONNX file through ONNX Runtime (CUDA when asked for and present, else CPU); every fallback is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import EdgeError, InputError
from edge.profile import Profile, load_profile, profile_hash
from edge.runtime.base import Runner

log = logging.getLogger("edge")

NETWORKS = ("pnet", "rnet", "onet", "resnet18", "text", "audio", "lfmim")
#: MTCNN's networks are tiny: ONNX Runtime's thread pool costs more than it gains on them (measured on a 2-core
#: x86, one detection on a 480 x 360 frame: 16 ms with 1 thread, 36 ms with 2), so they always run on one.
SINGLE_THREADED = ("pnet", "rnet", "onet")


def engine_dir(profile: str, target: str = "cpu", root: str | Path = "engines") -> Path:
    return Path(root) / profile / target


@dataclass
class EngineSet:
    """The runners of one build and what the run path needs beside them."""

    directory: Path
    manifest: dict[str, Any]
    profile: Profile
    runners: dict[str, Runner] = field(default_factory=dict)
    backends: dict[str, str] = field(default_factory=dict)
    #: network -> the file its runner opened (after a re-check on another CPU class, maybe not the build's choice)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / self.manifest.get("tokenizer", "tokenizer") / "tokenizer.json"

    @property
    def audio_do_normalize(self) -> bool:
        return bool(self.manifest.get("audio_do_normalize", True))

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()
        self.runners.clear()

    def __enter__(self) -> "EngineSet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _open_network(directory: Path, name: str, entry: dict[str, Any], *, device: str, threads: int | None,
                  use_plans: bool, use: str | None = None) -> tuple[Runner, str, str]:
    from edge.runtime.factory import open_runner

    plan = entry.get("plan")
    if plan and use_plans:
        try:
            return open_runner(directory / plan["file"], backend="tensorrt"), "tensorrt", plan["file"]
        except EdgeError as exc:
            log.warning("%s: TensorRT plan not usable (%s); falling back to ONNX Runtime", name, exc)
    chosen = {"fp32": entry.get("fp32_onnx"), "variant": entry.get("variant_onnx")}.get(use or "") or entry["onnx"]
    runner = open_runner(directory / chosen["file"], backend="onnxruntime", device=device, threads=threads,
                         fallback=True)
    return runner, f"onnxruntime-{getattr(runner, 'providers', [device])[0]}", chosen["file"]


def expected_inputs(profile: Profile) -> dict[str, dict[str, list[int | None]]]:
    """The fixed input dims each network must have for ``profile`` (None: dynamic)."""
    p = profile
    return {
        "resnet18": {"faces": [None, 3, p.vision.face_size, p.vision.face_size]},
        "text": {n: [None, p.text.tokens] for n in ("input_ids", "attention_mask", "token_type_ids")},
        "audio": {"waveform": [None, p.audio.block_samples]},
        "lfmim": {m: [None, p.lfmim.spec(m).length, p.lfmim.spec(m).dim] for m in ("text", "audio", "vision")},
    }


def _check_shapes(folder: Path, manifest: dict[str, Any], profile: Profile) -> None:
    from edge.errors import EngineIncompatible

    for net, inputs in expected_inputs(profile).items():
        have = manifest.get("networks", {}).get(net, {}).get("inputs")
        if have is None:
            continue
        for name, dims in inputs.items():
            got = have.get(name)
            ok = got is not None and len(got) == len(dims) and all(
                d is None or g == d for d, g in zip(dims, got))
            if not ok:
                raise EngineIncompatible(
                    f"{folder}: {net} takes {name} of shape {got}, but profile {profile.name!r} needs "
                    f"{['batch' if d is None else d for d in dims]}; the ONNX files do not match the profile; "
                    f"rebuild with: {manifest.get('rebuild')}")


def open_engines(profile: str | Profile, *, target: str = "cpu", root: str | Path = "engines",
                 device: str | None = None, threads: int | None = None, networks: tuple[str, ...] = NETWORKS,
                 directory: str | Path | None = None) -> EngineSet:
    """Check the build of ``profile`` for ``target`` and open runners for ``networks``."""
    from edge.runtime.cpu import cpu_info
    from edge.runtime.manifest import check_manifest

    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    folder = Path(directory) if directory else engine_dir(prof.name, target, root)
    if not (folder / "manifest.json").is_file():
        raise InputError(
            f"no {target} build of profile {prof.name!r} in {folder}; build it with: edge-build --profile "
            f"{profile if isinstance(profile, str) else prof.source} --precision int8 --target {target}"
            + ("" if directory else (f" --out-root {root}" if str(root) != "engines" else ""))
            + " (add --random-weights when the profile's weights are not at hand)")
    gpu = trt_version = None
    if target == "gpu":
        try:
            from edge.runtime.tensorrt_runner import device_info, tensorrt_version

            trt_version, gpu = tensorrt_version(), device_info()
        except EdgeError as exc:
            log.warning("TensorRT not usable here (%s); the ONNX files run on ONNX Runtime instead", exc)
    manifest = check_manifest(folder, profile_name=prof.name, profile_digest=profile_hash(prof),
                              tensorrt_version=trt_version, gpu=gpu)
    missing = [n for n in networks if n not in manifest.get("networks", {})]
    if missing:
        raise InputError(f"{folder}: the build has no {', '.join(missing)}; rebuild with: {manifest.get('rebuild')}")
    _check_shapes(folder, manifest, prof)
    uses: dict[str, str] = {}
    if target == "cpu":
        from edge.prepare.recheck import recheck

        uses = recheck(folder, manifest, cpu_info(), threads=threads)
    engines = EngineSet(folder, manifest, prof)
    dev = device or ("cuda" if target == "gpu" else "cpu")
    try:
        for name in networks:
            runner, backend, file = _open_network(folder, name, manifest["networks"][name], device=dev,
                                                  threads=1 if name in SINGLE_THREADED else threads,
                                                  use_plans=trt_version is not None, use=uses.get(name))
            engines.runners[name], engines.backends[name], engines.files[name] = runner, backend, file
    except BaseException:
        engines.close()
        raise
    log.info("opened %s (%s): %s", folder, manifest.get("precision"),
             ", ".join(f"{n}={b}" for n, b in engines.backends.items()))
    return engines
