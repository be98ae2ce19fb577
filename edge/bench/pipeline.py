"""``edge-bench pipeline``: the whole live loop (capture replay, vision, VAD, ASR, encoders, LFMIM) on a clip, per
build, replay speed and face-detection interval, through the real :class:`~edge.stream.recognizer.Recognizer`.

Per configuration: the real-time factor (compute seconds per media second, summed over the stages; below 1 the loop
keeps up), each stage's share, end-to-end latency p50 / p95 / p99 (``realtime`` runs: capture time of the newest
sample used -> estimate emitted; ``max`` runs have no capture clock, so the fusion tick's compute is reported
instead), process CPU use (CPU time / wall time, as a fraction of the usable cores), peak memory (process RSS above
the level before the build was opened), dropped frames, audio overflow, estimates, faces found / frames.
``detect_every=1`` (detect a face on every frame) is the naive baseline: with another interval in the same run, the
ratio of the two is reported. A configuration that fails is recorded and the others still run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from edge._lazy import lazy_import
from edge.bench.models import _fmt as _f
from edge.bench.system import PeakRss, machine_info, release_free_memory, rss_mb
from edge.errors import InputError

log = logging.getLogger("edge")

FORMAT = "lfmim-edge-bench-pipeline/1"
SPEEDS = ("realtime", "max")
#: summary stage keys -> table column names
STAGES = {"vision": "vision", "audio_encoder": "audio enc", "audio_vad": "VAD", "asr": "ASR",
          "text_encoder": "text", "lfmim": "LFMIM"}
#: a realtime run may take this many times the clip's length (plus loading) before it is called hung
REALTIME_SLACK = 3.0
MAX_RUN_S = 3600.0

Build = tuple[str, "str | os.PathLike[str]", "str | None"]


# -- inputs -----------------------------------------------------------------------------------------------------------
def loop_clip(clip: str | Path, times: int, out_dir: str | Path) -> Path:
    """``clip`` played ``times`` times in a row, as one file in ``out_dir`` (ffmpeg's concat demuxer: video copied and
    audio re-encoded, so its timestamps stay monotonic at the joins; all re-encoded where copying fails). ``times`` = 1
    returns ``clip`` itself."""
    clip = Path(clip)
    if times < 1:
        raise InputError(f"--loop must be at least 1, got {times}")
    if times == 1:
        return clip
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise InputError("--loop needs ffmpeg: install it with `apt-get install ffmpeg`")
    out_dir = Path(out_dir)
    listing = out_dir / "concat.txt"
    quoted = str(clip.resolve()).replace("'", "'\\''")
    listing.write_text(f"file '{quoted}'\n" * times, encoding="utf-8")
    out = out_dir / f"{clip.stem}.x{times}{clip.suffix or '.mp4'}"
    base = [ffmpeg, "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing)]
    for codec in (["-c:v", "copy", "-c:a", "aac"], ["-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac"]):
        done = subprocess.run([*base, *codec, str(out)], capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return out
        log.warning("ffmpeg concat (%s) failed: %s", " ".join(codec), done.stderr.strip().splitlines()[-1:])
    raise InputError(f"ffmpeg could not loop {clip} {times} times: {done.stderr.strip().splitlines()[-1:]}")


def fp32_view(build_dir: str | Path, out_dir: str | Path) -> Path | None:
    """The FP32 networks of a quantised build as a build folder of its own (links to the FP32 ONNX files the build
    keeps beside its INT8 / FP16 ones, and a manifest that points at them), or None when the build is FP32 already
    or lacks an FP32 file."""
    from edge.runtime.manifest import read_manifest

    src, out = Path(build_dir).resolve(), Path(out_dir)
    manifest = read_manifest(src)
    if manifest.get("precision") == "fp32":
        return None
    networks = manifest.get("networks", {})
    if not networks or any("fp32_onnx" not in entry for entry in networks.values()):
        return None
    out.mkdir(parents=True, exist_ok=True)
    for entry in networks.values():
        entry["onnx"] = dict(entry["fp32_onnx"])
        entry.pop("plan", None)
        entry["precision"] = "fp32"
        os.symlink(src / entry["onnx"]["file"], out / entry["onnx"]["file"])
    tokenizer = manifest.get("tokenizer")
    if tokenizer and (src / tokenizer).exists():
        os.symlink(src / tokenizer, out / tokenizer)
    manifest.update(precision="fp32", tensorrt={"built": False}, fp32_view_of=str(src))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return out


def _duration(clip: Path) -> float | None:
    from edge.media import probe

    return probe(clip)["duration"]


# -- one run ----------------------------------------------------------------------------------------------------------
def _percentiles(block: dict[str, Any]) -> dict[str, Any]:
    return {k: block.get(k) for k in ("p50", "p95", "p99")}


def run_once(engines: Any, clip: Path, *, profile: str, speed: str, detect_every: int, asr: str,
             threads: int | None, timeout_s: float, reference_mb: float = 0.0) -> dict[str, Any]:
    """Replay ``clip`` once through a :class:`Recognizer` on the open ``engines``; the figures of that run.

    ``reference_mb``: the RSS before the engines were opened (peak memory is reported above it)."""
    from edge.stream.config import RunConfig
    from edge.stream.recognizer import Recognizer

    config = RunConfig(profile=profile, engines=str(engines.directory), video=str(clip), speed=speed,
                       detect_every=detect_every, asr=asr, threads=threads or 0)
    recognizer = Recognizer(config, engines=engines)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    release_free_memory()
    with PeakRss(reference_mb) as peak:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            recognizer.start()
            finished = recognizer.wait(timeout_s)
        finally:
            recognizer.stop()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    s = recognizer.summary()
    stages = {k: s["compute_seconds_per_media_second"].get(k, 0.0) for k in STAGES}
    errors = list(s["errors"]) + ([] if finished else [f"no end of stream within {timeout_s:.0f} s"])
    return {"status": "failed" if errors else "ok", "note": "; ".join(errors),
            "media_s": s["media_seconds"], "wall_s": round(wall, 3), "rtf": round(sum(stages.values()), 4),
            "stages": stages, "end_to_end_ms": _percentiles(s["end_to_end_ms"]), "tick_ms": dict(s["tick_ms"]),
            "cpu_s": round(cpu, 3), "cpu_fraction": round(cpu / max(wall, 1e-9) / cores, 4), "cores": cores,
            "peak_rss_mb": round(peak.mb, 1), "peak_rss_exact": peak.exact,
            "dropped_frames": s["dropped_frames"], "audio_overflow_s": s["audio_overflow_s"],
            "estimates": s["estimates"], "fusion_rate_hz": recognizer.rate,
            "estimates_per_s": round(s["estimates"] / max(s["media_seconds"], 1e-9), 3), "frames": s["frames"], "frames_with_face": s["frames_with_face"],
            "speech_segments": s["speech_segments"], "transcripts": len(s["transcripts"]),
            "partial_transcripts": s.get("partial_transcripts", 0),
            "partials_skipped": getattr(recognizer.asr, "partials_skipped", 0) if recognizer.asr else 0,
            "transcript_latency_s": _latency(recognizer.asr),
            "transcript_texts": list(s["transcripts"])}


def _latency(asr_stage: Any) -> dict[str, float | None]:
    """End of speech -> final transcript, p50 / p95 seconds (realtime runs; None at max speed)."""
    import numpy as np

    values = list(getattr(asr_stage, "final_latency_s", []) or [])
    if not values:
        return {"p50": None, "p95": None}
    return {"p50": round(float(np.percentile(values, 50)), 3), "p95": round(float(np.percentile(values, 95)), 3)}


# -- the benchmark ----------------------------------------------------------------------------------------------------
def _check(clip: Path, builds: Sequence[Build], speeds: Sequence[str], detect_every: Sequence[int],
           repeats: int, threads: int | None, loop: int) -> None:
    """Every argument error as one clear :class:`InputError`, before anything is opened."""
    if not clip.is_file():
        raise InputError(f"clip {clip}: no such file")
    if not builds:
        raise InputError("no build given; pass label=engines/<profile>/<target> (edge-build writes it)")
    for label, directory, _ in builds:
        if not (Path(directory) / "manifest.json").is_file():
            raise InputError(f"build {label}: no build in {directory} (no manifest.json); build it with `edge-build "
                             "--profile paper --precision int8 --target cpu --random-weights`")
    bad = [s for s in speeds if s not in SPEEDS]
    if not speeds or bad:
        raise InputError(f"speeds must be chosen from {', '.join(SPEEDS)}, got {list(speeds)}")
    if not detect_every or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in detect_every):
        raise InputError(f"detect_every values must be positive integers, got {list(detect_every)}")
    if loop < 1:
        raise InputError(f"--loop must be at least 1, got {loop}")
    if repeats < 1:
        raise InputError(f"repeats must be at least 1, got {repeats}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a positive integer or None, got {threads!r}")


def _open_build(label: str, directory: Path, profile: str | None, threads: int | None) -> tuple[Any, dict[str, Any]]:
    """Open one build's engines; returns them and the build's record (with the RSS before opening, the memory
    reference)."""
    from edge.bench.models import build_profile
    from edge.runtime.manifest import read_manifest
    from edge.runtime.engines import open_engines

    manifest = read_manifest(directory)
    prof: Any = profile or build_profile(manifest, directory)
    release_free_memory()
    reference = rss_mb()
    started = time.perf_counter()
    engines = open_engines(prof, target=manifest.get("target", "cpu"), directory=directory, threads=threads)
    info = {"label": label, "dir": str(directory), "profile": engines.profile.name,
            "profile_source": str(profile or engines.profile.name), "precision": manifest.get("precision"),
            "target": manifest.get("target"), "random_weights": bool(manifest.get("random_weights")),
            "backends": dict(engines.backends), "open_s": round(time.perf_counter() - started, 2),
            "models_rss_mb": round(rss_mb() - reference, 1), "reference_rss_mb": round(reference, 1)}
    return engines, info


def compare(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Naive (detect_every = 1) over each other interval, per build and speed: RTF, vision cost and p95 latency
    ratios (medians over repeats; > 1 means the optimised setting is cheaper)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault((r["build"], r.get("asr", ""), r["speed"], r["detect_every"]), []).append(r)

    def med(key: tuple, get: Callable[[dict[str, Any]], Any]) -> float | None:
        values = [v for v in map(get, groups.get(key, [])) if v is not None]
        return statistics.median(values) if values else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    out = []
    for build, asr, speed, d in sorted(k for k in groups if k[3] != 1):
        naive = (build, asr, speed, 1)
        if naive not in groups:
            continue
        p95 = (lambda r: r["end_to_end_ms"]["p95"]) if speed == "realtime" else (lambda r: r["tick_ms"]["p95"])
        pairs = {"rtf": lambda r: r["rtf"], "vision": lambda r: r["stages"]["vision"], "p95_ms": p95}
        entry = {"build": build, "asr": asr, "speed": speed, "naive_detect_every": 1, "detect_every": d}
        for name, get in pairs.items():
            entry[f"naive_{name}"], entry[name] = med(naive, get), med((build, asr, speed, d), get)
            entry[f"{name}_ratio"] = ratio(entry[f"naive_{name}"], entry[name])
        out.append(entry)
    return out


def bench_pipeline(clip: str | Path, builds: Sequence[Build], *, speeds: Sequence[str] = SPEEDS, repeats: int = 1,
                   threads: int | None = None, detect_every: Sequence[int] = (1,), asr: str = "pocketsphinx",
                   loop: int = 1, fp32: bool = False, progress: bool = False,
                   on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Replay ``clip`` (``loop`` times in a row) through the live loop for every build x speed x detect_every x
    repeat; returns a JSON-ready dict with ``rows``, ``comparisons`` (naive vs optimised) and ``failures``.

    ``builds``: (label, build folder, profile name or TOML, None = the one in the build's manifest). ``fp32``: also
    run the FP32 networks that a quantised build keeps beside its own. ``on_update`` gets the result after each run.
    """
    clip = Path(clip)
    _check(clip, builds, speeds, detect_every, repeats, threads, loop)
    from edge.stream.config import RunConfig

    asrs = [a.strip() for a in asr.split(",") if a.strip()] if isinstance(asr, str) else list(asr)
    if not asrs:
        raise InputError("--asr: name at least one speech recognizer (e.g. pocketsphinx,whisper) or none")
    for name in asrs:
        RunConfig(asr=name)  # an unknown ASR backend is a clear error before anything runs
    tqdm = lazy_import("tqdm").tqdm
    with tempfile.TemporaryDirectory(prefix="edge-bench-pipeline-") as tmp:
        media = loop_clip(clip, loop, tmp)
        duration = _duration(media)
        plan = [(label, Path(d), p) for label, d, p in builds]
        if fp32:
            for label, d, p in list(plan):
                view = fp32_view(d, Path(tmp) / f"{label}-fp32")
                if view is not None:
                    plan.append((f"{label}-fp32", view, p))
        result: dict[str, Any] = {
            "format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_info(),
            "settings": {"clip": str(clip), "loop": loop, "media_duration_s": duration, "speeds": list(speeds),
                         "detect_every": list(detect_every), "repeats": repeats, "threads": threads,
                         "asr": ",".join(asrs)},
            "builds": [], "rows": [], "comparisons": [], "failures": []}
        total = len(plan) * len(speeds) * len(detect_every) * repeats * len(asrs)
        with tqdm(total=total, desc="pipeline", unit="run", disable=not progress) as bar:
            for label, directory, profile in plan:
                _bench_build(result, label, directory, profile, media, duration, bar, on_update,
                             speeds=speeds, detect_every=detect_every, repeats=repeats, threads=threads, asrs=asrs)
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    result["machine"]["load_average_end"] = load
    return result


def _bench_build(result: dict[str, Any], label: str, directory: Path, profile: str | None, media: Path,
                 duration: float | None, bar: Any, on_update: Callable[[dict[str, Any]], None] | None, *,
                 speeds: Sequence[str], detect_every: Sequence[int], repeats: int, threads: int | None,
                 asrs: Sequence[str]) -> None:
    """Every run of one build into ``result``; a build that does not open, or a run that fails, is recorded."""
    configs = [(a, s, d, k) for a in asrs for s in speeds for d in detect_every for k in range(repeats)]
    try:
        engines, info = _open_build(label, directory, profile, threads)
    except Exception as exc:  # noqa: BLE001 - record it; other builds still run
        log.warning("build %s: cannot open: %s", label, exc)
        result["failures"].append({"build": label, "error": f"{type(exc).__name__}: {exc}"})
        bar.update(len(configs))
        if on_update is not None:
            on_update(result)
        return
    result["builds"].append(info)
    try:
        for asr, speed, d, k in configs:
            bar.set_postfix_str(f"{label} {asr} {speed} detect/{d}")
            base = {"build": label, "precision": info["precision"], "asr": asr, "speed": speed, "detect_every": d,
                    "repeat": k}
            timeout = (duration or 60.0) * REALTIME_SLACK + 30.0 if speed == "realtime" else MAX_RUN_S
            try:
                row = {**base, **run_once(engines, media, profile=info["profile_source"], speed=speed,
                                          detect_every=d, asr=asr, threads=threads, timeout_s=timeout,
                                          reference_mb=info["reference_rss_mb"])}
            except Exception as exc:  # noqa: BLE001 - a failed configuration must not stop the others
                log.warning("%s %s detect/%d failed: %s", label, speed, d, exc)
                row = {**base, "status": "failed", "note": f"{type(exc).__name__}: {exc}"}
            result["rows"].append(row)
            if row["status"] != "ok":
                result["failures"].append({**base, "error": row["note"]})
            result["comparisons"] = compare(result["rows"])
            bar.update(1)
            if on_update is not None:
                on_update(result)
    finally:
        engines.close()


# -- report -----------------------------------------------------------------------------------------------------------
def to_markdown(result: dict[str, Any]) -> str:
    """A caption, one table line per run, and the naive-vs-optimised ratios."""
    m, s = result.get("machine", {}), result.get("settings", {})
    caption = (f"CPU: {m.get('cpu')} ({m.get('usable_cores')} usable of {m.get('cores')} cores); GPU: "
               f"{m.get('gpu') or 'none'}; load average at start {m.get('load_average')}, at end "
               f"{m.get('load_average_end')}; clip {Path(str(s.get('clip'))).name} x{s.get('loop')} "
               f"({_f(s.get('media_duration_s'), '.1f')} s); ASR {s.get('asr')}; "
               f"threads {s.get('threads') or 'default'}. "
               "RTF = compute s per media s summed over the stages; e2e = capture -> estimate (realtime runs), "
               "fusion tick compute in max runs (marked *). Realtime runs count only the work done: frames dropped "
               "and fusion ticks skipped when late cost nothing, so max runs give the full cost.")
    stage_cols = " / ".join(STAGES.values())
    lines = [caption, "",
             f"| build | ASR | speed | detect_every | RTF | e2e p50/p95/p99 ms | {stage_cols} s per media s | CPU % "
             "| peak MB | dropped | audio lost s | estimates | faces/frames | transcript s p50/p95 | note |",
             "|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    for r in result.get("rows", []):
        ok = r.get("status") == "ok"
        if ok and r["speed"] == "realtime":
            e = r["end_to_end_ms"]
            e2e = "/".join(_f(e.get(k), ".0f") for k in ("p50", "p95", "p99"))
        elif ok:
            e2e = "/".join(_f(r["tick_ms"].get(k), ".0f") for k in ("p50", "p95")) + " *"
        else:
            e2e = "-"
        stages = " / ".join(_f(r["stages"].get(k), ".3f") for k in STAGES) if ok else "-"
        note = ("FAILED: " + r.get("note", "") if not ok else r.get("note", "")).replace("|", "/").replace("\n", " ")
        lines.append("| " + " | ".join([
            str(r["build"]), str(r.get("asr", "")), r["speed"], str(r["detect_every"]), _f(r.get("rtf") if ok else None, ".3f"), e2e, stages,
            _f(r["cpu_fraction"] * 100 if ok else None, ".0f"), _f(r.get("peak_rss_mb") if ok else None, ".0f"),
            _f(r.get("dropped_frames") if ok else None, "d"), _f(r.get("audio_overflow_s") if ok else None, ".2f"),
            _f(r.get("estimates") if ok else None, "d"),
            f"{r['frames_with_face']}/{r['frames']}" if ok else "-",
            "/".join(_f((r.get("transcript_latency_s") or {}).get(k), ".2f") for k in ("p50", "p95")) if ok else "-",
            note[:160]]) + " |")
    for f in result.get("failures", []):
        if "speed" not in f:
            lines.append(f"| {f['build']} | - | - | - | - | - | - | - | - | - | - | - | - | - | FAILED: "
                         f"{f['error'].replace('|', '/')[:160]} |")
    if result.get("comparisons"):
        lines += ["", "| build | speed | detect_every (naive 1 ->) | RTF naive -> opt | ratio | vision ratio "
                      "| p95 ms naive -> opt |", "|---|---|---:|---|---:|---:|---|"]
        for c in result["comparisons"]:
            lines.append(f"| {c['build']}{' (' + c['asr'] + ')' if c.get('asr') else ''} | {c['speed']} | {c['detect_every']} | {_f(c['naive_rtf'], '.3f')} -> "
                         f"{_f(c['rtf'], '.3f')} | {_f(c['rtf_ratio'], '.2f')}x | {_f(c['vision_ratio'], '.2f')}x | "
                         f"{_f(c['naive_p95_ms'], '.0f')} -> {_f(c['p95_ms'], '.0f')} |")
    return "\n".join(lines) + "\n"
