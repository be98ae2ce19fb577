"""``edge-run --check``: is this machine ready to run the live loop?  What a kiosk installer runs (run side).

It opens (on a first run: prepares) the build, runs every network once on the demo material, lists the capture
devices, the inference backends and the CPU's features, and prints one verdict per line: ``ok``, ``warn``
(works, but something is missing that some runs need) or ``FAIL`` (a run with these options cannot work).
The exit status is 1 when any line fails.  The capture devices a run needs are judged by its source: a camera run
needs a camera and a microphone, a file replay or ``--demo`` needs ffmpeg.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edge.stream.config import RunConfig

log = logging.getLogger("edge")


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str  # "ok", "warn", "FAIL"
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"check": self.name, "verdict": self.verdict, "detail": self.detail}


def _try(name: str, fn: Callable[[], str], *, missing: str = "FAIL") -> Check:
    try:
        return Check(name, "ok", fn())
    except Exception as exc:  # noqa: BLE001 - every failure becomes a verdict line, none is raised
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check(name, missing, text)


def _system() -> str:
    from edge.runtime.cpu import cpu_info

    cpu = cpu_info()
    return (f"Python {platform.python_version()} on {platform.system()} {cpu['machine']}; CPU {cpu['model'] or '?'}, "
            f"class {cpu['class']} ({', '.join(cpu['features']) or 'no INT8-relevant flags'})")


def _backends() -> list[Check]:
    from edge.runtime.factory import available_backends

    out = []
    for name, status in available_backends().items():
        verdict = "ok" if status.startswith("available") else ("FAIL" if name == "onnxruntime" else "warn")
        out.append(Check(f"backend {name}", verdict, status))
    return out


def _programs(needed: bool) -> list[Check]:
    from edge.media import tool_path

    out = []
    for program, why in (("ffmpeg", "decodes replayed files and the demo clip"), ("espeak-ng", "speaks the demo clip")):
        path = tool_path(program)
        verdict = "ok" if path else ("FAIL" if needed else "warn")
        out.append(Check(f"program {program}", verdict, path or f"not found ({why}): apt-get install {program}"))
    return out


def _devices(config: RunConfig) -> list[Check]:
    from edge.stream.microphone import _describe, _input_devices, _sounddevice
    from edge.stream.sources import preflight_camera

    live = not (config.video or config.audio)
    camera = config.camera or "0"

    def cam() -> str:
        preflight_camera(camera)
        return f"camera {camera} opens"

    def mic() -> str:
        inputs = _input_devices(_sounddevice())
        if not inputs:
            raise RuntimeError("no audio input device found (PortAudio lists none)")
        return _describe(inputs)

    missing = "FAIL" if live else "warn"
    return [_try("camera", cam, missing=missing), _try("microphone", mic, missing=missing)]


def _networks(config: RunConfig) -> list[Check]:
    from edge.runtime.engines import open_engines
    from edge.stream.first_run import ensure_build

    checks: list[Check] = []
    try:
        if not config.engines:
            ensure_build(config.profile, target=config.target, root=config.engines_root,
                         random_weights=config.random_weights, threads=config.threads or None)
        engines = open_engines(config.profile, target=config.target, root=config.engines_root,
                               directory=config.engines or None, threads=config.threads or None)
    except Exception as exc:  # noqa: BLE001
        return [Check("build", "FAIL", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)]
    with engines:
        m = engines.manifest
        built_on = (m.get("cpu") or {}).get("class", "?")
        checks.append(Check("build", "ok", f"{engines.directory} ({m.get('made_by', 'edge-build')}, gated on a "
                                           f"{built_on} CPU)"))
        for name, entry in m["networks"].items():
            file = engines.files.get(name, entry["onnx"]["file"])
            checks.append(Check(f"network {name}", "ok", f"{file} on {engines.backends.get(name, '?')} "
                                                         f"({entry.get('selection', {}).get('reason', entry['precision'])})"))
        checks.extend(_run_once(engines))
    return checks


def _run_once(engines: Any) -> list[Check]:
    """Every network once on the demo material (a frame and the speech of the demo clip, a sentence)."""
    from edge.features.extractors import Extractors

    out: list[Check] = []
    x = Extractors(engines)
    p = engines.profile

    def timed(name: str, fn: Callable[[], str]) -> None:
        started = time.perf_counter()
        check = _try(name, fn)
        if check.verdict == "ok":
            check = Check(name, "ok", f"{check.detail} in {(time.perf_counter() - started) * 1e3:.1f} ms")
        out.append(check)

    state: dict[str, Any] = {}

    def material() -> str:
        from edge.demo import make_demo_clip
        from edge.media import read_audio
        from edge.video import VideoFileReader

        clip = make_demo_clip()
        for _, rgb in VideoFileReader(clip):
            state["frame"] = rgb
            break
        state["audio"], _ = read_audio(clip, sample_rate=p.audio.sample_rate)
        return str(clip)

    timed("demo material", material)
    if "frame" not in state:
        return out

    def face() -> str:
        crop = x.face(state["frame"])
        if crop.aligned is None:
            raise RuntimeError("MTCNN found no face on the demo frame")
        state["face"] = x.face_features(crop.aligned[None])
        return f"P/R/O-Net found a face (score {crop.score:.3f}), face encoder -> {state['face'].shape[-1]}-d"

    def text() -> str:
        state["text"] = x.text(["I am so happy today!"])[0]
        return f"text encoder -> {state['text'].shape}"

    def audio() -> str:
        block = p.audio.block_samples
        samples = state["audio"][:block] if state["audio"].size >= block else np.pad(state["audio"], (0, block))[:block]
        state["audio_frames"] = x.audio_block(samples.astype(np.float32))
        return f"audio encoder -> {state['audio_frames'].shape}"

    def fuse() -> str:
        from edge.features.audio_pre import fit_frames

        vision = np.zeros((p.vision.frames, p.vision.dim), np.float32)
        if "face" in state:
            vision[:] = state["face"][0]
        audio_feats = fit_frames(state.get("audio_frames", np.zeros((1, p.audio.dim), np.float32)), p.audio.frames)
        probs = x.fuse(state.get("text", np.zeros((p.text.tokens, p.text.dim), np.float32)), audio_feats, vision)
        top = p.classes[int(np.argmax(probs["m"]))]
        return f"LFMIM -> fused {top} ({float(np.max(probs['m'])):.2f})"

    for name, fn in (("run face", face), ("run text", text), ("run audio", audio), ("run lfmim", fuse)):
        timed(name, fn)
    return out


def _speech(config: RunConfig) -> list[Check]:
    def vad() -> str:
        from edge.stream.vad import find_model

        return str(find_model())

    checks = [_try("voice activity (Silero VAD)", vad)]
    if config.asr == "none":
        return checks + [Check("speech recognition", "warn", "--asr none: no transcripts, no text modality")]

    def asr() -> str:
        # the same choice the run makes (--asr auto, the profile's [asr] and language), then the model loaded once
        from edge.asr import open_planned, plan_for_run
        from edge.profile import load_profile

        plan = plan_for_run(config, load_profile(config.profile))
        recognizer = open_planned(plan)
        return f"{plan.backend}: {recognizer!r} ({plan.reason})"

    return checks + [_try("speech recognition", asr)]


def run_checks(config: RunConfig) -> list[Check]:
    """Every check, in the order they are printed."""
    replay = bool(config.video or config.audio)
    checks = [_try("system", _system)]
    checks += _backends()
    checks += _programs(needed=replay)
    checks += _devices(config)
    checks += _speech(config)
    checks += _networks(config)
    return checks


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{c.verdict:4s}  {c.name:{width}s}  {c.detail}" for c in checks]
    failed = sum(c.verdict == "FAIL" for c in checks)
    warned = sum(c.verdict == "warn" for c in checks)
    lines.append(f"{'ready' if not failed else 'NOT READY'}: {len(checks)} checks, {failed} failed, {warned} warnings")
    return "\n".join(lines)
