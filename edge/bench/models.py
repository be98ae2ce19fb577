"""``edge-bench models``: latency, throughput and memory of every network of a build, per backend and precision,
with PyTorch eager FP32 of the same network measured in the same run as the baseline.

Per network, variant (see :mod:`edge.bench.variants`) and batch size: ``warmup`` untimed runs, then ``repeats`` runs
timed with :func:`time.perf_counter` -> min / p50 / p95 / mean latency (ms), throughput (items/s = batch x repeats /
total time) and peak memory (process RSS above the level before the model was loaded; device memory on CUDA where
measurable). The speedup of a variant is the baseline's p50 over the variant's p50 at the same batch size (against
torch on CUDA for CUDA variants when torch sees the GPU, else against torch on the CPU). ONNX Runtime and torch use
the same number of intra-op threads. A network that fails (unreadable file, error while running) is recorded as
failed and the others are still measured.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from edge._lazy import lazy_import
from edge.bench.feeds import PNET_FRAME, fixed_batch, make_feeds, pnet_size, vocab_size
from edge.bench.system import CudaMemory, PeakRss, machine_info, release_free_memory, rss_mb
from edge.bench.variants import Capabilities, Variant, check_file, plan_variants
from edge.errors import EngineIncompatible, InputError
from edge.profile import Profile, load_profile, profile_hash, shipped_profiles

log = logging.getLogger("edge")

FORMAT = "lfmim-edge-bench-models/1"
NETWORKS = ("pnet", "rnet", "onet", "resnet18", "text", "audio", "lfmim")


# -- timing -----------------------------------------------------------------------------------------------------------
def time_calls(fn: Callable[[], Any], *, warmup: int, repeats: int) -> list[float]:
    """``warmup`` untimed calls, then the latency of each of ``repeats`` calls, in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summarize(times_ms: Sequence[float], batch: int) -> dict[str, float]:
    """min / p50 / p95 / mean latency (ms) and throughput (items/s) of a series of timed batches."""
    t = np.asarray(times_ms, dtype=np.float64)
    return {"min_ms": float(t.min()), "p50_ms": float(np.percentile(t, 50)), "p95_ms": float(np.percentile(t, 95)),
            "mean_ms": float(t.mean()), "items_per_s": float(batch * len(t) * 1e3 / t.sum())}


# -- builds -----------------------------------------------------------------------------------------------------------
def build_profile(manifest: dict[str, Any], directory: Path) -> Profile:
    """The profile a build was made from, checked against the hash in its manifest."""
    info = manifest.get("profile", {})
    name, source = info.get("name", ""), info.get("source", "")
    profile = load_profile(name if name in shipped_profiles() and source.startswith("edge/profiles/") else source)
    if profile_hash(profile) != info.get("hash"):
        raise EngineIncompatible(f"{directory}: profile {name!r} ({source}) changed since this build, so its PyTorch "
                                 f"baseline cannot be rebuilt faithfully; rebuild with: {manifest.get('rebuild')}")
    return profile


def _open(variant: Variant, directory: Path, ctx: dict[str, Any], threads: int) -> tuple[Any, list, Callable]:
    """Open ``variant``; returns (handle, input specs, run(feeds) -> callable with no arguments)."""
    if variant.baseline:
        from edge.bench.torch_baseline import TorchEager, torch_module

        specs = ctx["specs"]
        eager = TorchEager(torch_module(variant.network, ctx["profile"], ctx["manifest"], vocab=ctx["vocab"]),
                           [s.name for s in specs], device=variant.device)

        def bind_torch(feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
            inputs = eager.prepare(feeds)
            return lambda: eager(inputs)

        return eager, specs, bind_torch
    from edge.runtime.factory import open_runner

    path = check_file(directory, variant)
    runner = open_runner(path, backend=variant.backend, device=variant.device,
                         threads=threads if variant.backend == "onnxruntime" else None)

    def bind_runner(feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        return lambda: runner.infer(feeds)

    return runner, runner.inputs, bind_runner


def _graph_specs(path: Path) -> list:
    """Input specs of an ONNX graph (names, shapes, dtypes), read without its weights."""
    onnx = lazy_import("onnx", purpose="reading ONNX graphs")
    from edge.runtime.base import TensorSpec

    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}
    return [TensorSpec(v.name, tuple(d.dim_param or d.dim_value or None for d in v.type.tensor_type.shape.dim),
                       onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))
            for v in graph.input if v.name not in init]


def _row(variant: Variant, build: dict[str, Any], batch: int | None, **fields: Any) -> dict[str, Any]:
    return {"build": build["dir"], "profile": build["profile"], **variant.to_dict(), "batch": batch,
            "status": "ok", "note": "", **fields}


def _measure_variant(variant: Variant, build: dict[str, Any], ctx: dict[str, Any], opts: dict[str, Any],
                     tick: Callable[[], None]) -> list[dict[str, Any]]:
    """Rows for every batch size of one variant (a failed open gives one failed row)."""
    directory, batches = Path(build["dir"]), opts["batches"]
    release_free_memory()
    reference, gpu_reference = rss_mb(), CudaMemory.used_mb() if variant.device == "cuda" else None
    try:
        handle, specs, bind = _open(variant, directory, ctx, opts["threads"])
    except Exception as exc:  # a broken artifact or environment must not stop the other networks
        log.warning("%s: cannot open: %s", variant.label, exc)
        log.debug("%s", variant.label, exc_info=True)
        for _ in batches:
            tick()
        return [_row(variant, build, None, status="failed", note=f"{type(exc).__name__}: {exc}")]
    rows = []
    try:
        fixed = fixed_batch(specs)
        for batch in batches:
            tick()
            if fixed is not None and fixed != batch:
                rows.append(_row(variant, build, batch, status="skipped", note=f"fixed batch {fixed} in the graph"))
                continue
            try:
                feeds = make_feeds(variant.network, specs, batch, min_face=ctx["profile"].vision.min_face,
                                   vocab=ctx["vocab"])
                call = bind(feeds)
                with PeakRss(reference) as peak, CudaMemory(gpu_reference, torch_allocator=(
                        variant.baseline and variant.device == "cuda")) as gpu:
                    times = time_calls(call, warmup=opts["warmup"], repeats=opts["repeats"])
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory at a large batch: record, go on
                log.warning("%s batch %d failed: %s", variant.label, batch, exc)
                rows.append(_row(variant, build, batch, status="failed", note=f"{type(exc).__name__}: {exc}"))
                continue
            shapes = {k: list(v.shape) for k, v in feeds.items()}
            rows.append(_row(variant, build, batch, input_shapes=shapes, **summarize(times, batch),
                             peak_rss_mb=round(peak.mb, 1), peak_rss_exact=peak.exact,
                             device_peak_mb=None if gpu.mb is None else round(gpu.mb, 1)))
    finally:
        if hasattr(handle, "close"):
            handle.close()
    return rows


def _add_speedups(rows: list[dict[str, Any]]) -> None:
    base = {(r["build"], r["network"], r["batch"], r["device"]): r["p50_ms"]
            for r in rows if r["baseline"] and r["status"] == "ok"}
    for r in rows:
        if r["status"] != "ok":
            continue
        ref_device = r["device"] if (r["build"], r["network"], r["batch"], r["device"]) in base else "cpu"
        ref = base.get((r["build"], r["network"], r["batch"], ref_device))
        r["speedup_vs"] = f"torch-{ref_device} fp32" if ref else None
        r["speedup_vs_torch_fp32"] = round(ref / r["p50_ms"], 3) if ref and r["p50_ms"] > 0 else None


# -- entry point ------------------------------------------------------------------------------------------------------
def bench_models(build_dirs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                 networks: Sequence[str] | None = None, batches: Sequence[int] = (1, 4, 8), warmup: int = 3,
                 repeats: int = 20, threads: int | None = None, baseline: bool = True, progress: bool = False,
                 on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Measure the networks of one or more builds (``engines/<profile>/<target>/`` folders); returns a JSON-ready dict.

    ``threads``: intra-op threads for ONNX Runtime and torch alike (None: every usable core). ``on_update`` is called
    with the result so far after each variant (to save partial results).
    """
    from edge.runtime.manifest import read_manifest

    dirs = [Path(build_dirs)] if isinstance(build_dirs, (str, os.PathLike)) else [Path(d) for d in build_dirs]
    if not dirs:
        raise InputError("no build folder given; pass engines/<profile>/<target> (edge-build writes it)")
    unknown = sorted(set(networks or ()) - set(NETWORKS))
    if unknown:
        raise InputError(f"unknown network(s) {', '.join(unknown)}; choose from {', '.join(NETWORKS)}")
    if not batches or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches):
        raise InputError(f"batch sizes must be positive integers, got {list(batches)}")
    if warmup < 0 or repeats < 1:
        raise InputError(f"warmup must be >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a positive integer or None, got {threads!r}")
    threads = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    caps = Capabilities.probe()
    builds, plans = [], []
    for d in dirs:
        manifest = read_manifest(d)
        profile = build_profile(manifest, d)
        names = [n for n in (networks or NETWORKS) if n in manifest["networks"]]
        missing = sorted(set(networks or ()) - set(names))
        if missing:
            raise InputError(f"{d}: the build has no {', '.join(missing)}; it has {', '.join(manifest['networks'])}")
        builds.append({"dir": str(d), "profile": profile.name, "precision": manifest.get("precision"),
                       "target": manifest.get("target"), "random_weights": bool(manifest.get("random_weights")),
                       "pnet_input_hw": list(pnet_size(profile.vision.min_face))})
        ctx = {"manifest": manifest, "profile": profile, "vocab": vocab_size(d, manifest)}
        plans += [(builds[-1], ctx, n, plan_variants(n, manifest["networks"][n], caps, baseline=baseline))
                  for n in names]
    opts = {"batches": tuple(batches), "warmup": warmup, "repeats": repeats, "threads": threads}
    result: dict[str, Any] = {
        "format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_info(),
        "settings": {**opts, "batches": list(batches), "baseline": baseline, "networks": list(networks or NETWORKS),
                     "pnet_frame_wh": list(PNET_FRAME), "capabilities": dataclasses.asdict(caps)},
        "builds": builds, "rows": [], "failures": []}
    tqdm = lazy_import("tqdm").tqdm
    total = sum(len(v) for *_, v in plans) * len(batches)
    torch = _set_torch_threads(threads) if baseline else None
    try:
        with tqdm(total=total, desc="benchmark", unit="run", disable=not progress) as bar:
            for build, ctx, name, variants in plans:
                _network(result, build, ctx, name, variants, opts, bar, on_update)
    finally:
        if torch is not None:
            torch[0].set_num_threads(torch[1])
    _add_speedups(result["rows"])
    return result


def _network(result: dict[str, Any], build: dict[str, Any], ctx: dict[str, Any], name: str, variants: list[Variant],
             opts: dict[str, Any], bar: Any, on_update: Callable[[dict[str, Any]], None] | None) -> None:
    """Measure every variant of one network into ``result`` (a failure is recorded, never raised)."""
    try:
        entry = ctx["manifest"]["networks"][name]
        fp32 = entry.get("fp32_onnx") or entry["onnx"]
        ctx["specs"] = _graph_specs(Path(build["dir"]) / fp32["file"])
    except Exception as exc:  # noqa: BLE001 - the baseline needs the graph's inputs; without them, only ONNX rows
        ctx["specs"] = None
        log.warning("%s: cannot read the FP32 graph's inputs (%s); no PyTorch baseline", name, exc)
    for variant in variants:
        bar.set_postfix_str(variant.label)
        if variant.baseline and ctx["specs"] is None:
            rows = [_row(variant, build, None, status="failed", note="the FP32 ONNX graph could not be read")]
            bar.update(len(opts["batches"]))
        else:
            rows = _measure_variant(variant, build, ctx, opts, lambda: bar.update(1))
        result["rows"] += rows
        result["failures"] += [{"build": r["build"], "network": name, "variant": variant.label, "batch": r["batch"],
                                "error": r["note"]} for r in rows if r["status"] == "failed"]
        if on_update is not None:
            _add_speedups(result["rows"])
            on_update(result)


def _set_torch_threads(threads: int) -> tuple[Any, int] | None:
    try:
        torch = lazy_import("torch", purpose="the PyTorch baseline")
    except ImportError:
        return None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    return torch, before


# -- report -----------------------------------------------------------------------------------------------------------
def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def to_markdown(result: dict[str, Any]) -> str:
    """A caption and a markdown table with one line per row of ``result``."""
    m, s = result.get("machine", {}), result.get("settings", {})
    caption = (f"CPU: {m.get('cpu')} ({m.get('usable_cores')} usable of {m.get('cores')} cores); GPU: "
               f"{m.get('gpu') or 'none'}; load average at start {m.get('load_average')}; threads {s.get('threads')}; warm-up {s.get('warmup')}, "
               f"{s.get('repeats')} timed runs; P-Net at a {'x'.join(map(str, s.get('pnet_frame_wh', [])))} frame's "
               "first pyramid level.")
    lines = [caption, "",
             "| network | backend | precision | batch | p50 ms | p95 ms | items/s | speedup vs torch fp32 | peak MB "
             "| note |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in result.get("rows", []):
        ok = r.get("status") == "ok"
        note = r.get("note", "") if r.get("status") != "skipped" else f"skipped: {r.get('note', '')}"
        note = (f"FAILED: {note}" if r.get("status") == "failed" else note).replace("|", "/").replace("\n", " ")
        speed = r.get("speedup_vs_torch_fp32") if ok else None
        lines.append("| " + " | ".join([
            r["network"], f"{r['backend']}-{r['device']}", r["precision"], _fmt(r.get("batch"), "d"),
            _fmt(r.get("p50_ms") if ok else None, ".2f"), _fmt(r.get("p95_ms") if ok else None, ".2f"),
            _fmt(r.get("items_per_s") if ok else None, ".1f"), "-" if speed is None else f"{speed:.2f}x",
            _fmt(r.get("peak_rss_mb") if ok else None, ".0f"), note[:160]]) + " |")
    return "\n".join(lines) + "\n"
