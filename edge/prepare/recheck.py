"""A CPU build opened on a processor of another class: its fidelity gate and timings re-run there, not trusted.

ONNX Runtime runs INT8 with different kernels per CPU class (:mod:`edge.runtime.cpu`), so a variant that passed the
gate on the build machine may not pass here, and one that was not faster there may be faster here.  The build keeps
the gate's held-out feeds (``gate_feeds.npz``) and both files of every network it made a variant of; on another CPU
class :func:`recheck` measures each variant against FP32 on those feeds, times both, decides as the build did
(:func:`edge.prepare.select.decide`, a failed gate falls back to FP32) and records the outcome in the manifest under
``cpu_checks.<class>``, so it runs once per machine class (a few seconds).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edge.fileio import write_text_atomic
from edge.prepare.fidelity import MIN_AGREEMENT, MIN_COSINE, classifier_agreement, evaluate, failure_line, feature_cosine
from edge.prepare.networks import load_gate_feeds
from edge.prepare.select import decide, time_pair

log = logging.getLogger("edge")


def _summary(figures: dict[str, Any]) -> dict[str, Any]:
    outputs = figures.get("outputs", {})
    if figures.get("kind") == "classifier":
        head = figures.get("fused_head", "m")
        return {"passed": figures["passed"], "agreement": outputs.get(head, {}).get("agreement")}
    return {"passed": figures["passed"],
            "min_mean_cosine": min((o["mean_cosine"] for o in outputs.values()), default=None)}


def recheck(folder: Path, manifest: dict[str, Any], cpu: dict[str, Any], *, threads: int | None = None
            ) -> dict[str, str]:
    """Which file each re-checked network uses on this CPU: ``{network: "fp32" | "variant"}`` ({} when the build was
    made on this CPU class, or is not a CPU build)."""
    built = (manifest.get("cpu") or {}).get("class")
    here = cpu["class"]
    if manifest.get("target") != "cpu" or not built or built == here:
        return {}
    done = (manifest.get("cpu_checks") or {}).get(here)
    if done:
        return {net: check["use"] for net, check in done.items()}
    candidates = {n: e for n, e in manifest.get("networks", {}).items() if e.get("variant_onnx")}
    if not candidates:
        return {}
    feeds_file = manifest.get("gate_feeds")
    if not feeds_file or not (folder / feeds_file).is_file():
        log.warning("%s was gated on a %s CPU, this one is %s, and the build keeps no held-out feeds to re-check it: "
                    "its quantized networks run in FP32 here (rebuild with: %s)", folder, built, here,
                    manifest.get("rebuild"))
        return {n: "fp32" for n in candidates}
    log.warning("%s was built and gated on a %s CPU; this one is %s: re-running its fidelity gate here (%d networks, "
                "on the build's held-out samples)", folder, built, here, len(candidates))
    feeds = load_gate_feeds(folder / feeds_file)
    results: dict[str, dict[str, Any]] = {}
    for net, entry in candidates.items():
        fp32, variant = folder / entry["fp32_onnx"]["file"], folder / entry["variant_onnx"]["file"]
        held = feeds.get(net)
        if not held:
            results[net] = {"use": "fp32", "reason": "no held-out feeds for this network"}
            continue
        gate = entry.get("fidelity") or {}
        lo_agree, lo_cos = gate.get("min_agreement", MIN_AGREEMENT), gate.get("min_cosine", MIN_COSINE)
        fid = (classifier_agreement if net == "lfmim" else feature_cosine)(fp32, variant, held)
        figures, failures = evaluate(fid, min_agreement=lo_agree, min_cosine=lo_cos)
        if failures:
            log.warning("%s: %s on this %s CPU (threshold %s); running %s in FP32", net, failure_line(fid, failures),
                        here, lo_agree if fid.kind == "classifier" else lo_cos, net)
        timing = None if failures else time_pair(fp32, variant, held[0],
                                                 threads=1 if net in ("pnet", "rnet", "onet") else threads)
        decision = decide(net, entry.get("requested", "int8"), passed=not failures, timing=timing, fallback=True)
        results[net] = {"use": decision.keep, "reason": decision.reason, "fidelity": _summary(figures),
                        "timing": timing}
    record = dict(manifest)
    record["cpu_checks"] = {**(manifest.get("cpu_checks") or {}), here: results}
    try:
        write_text_atomic(folder / "manifest.json", json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        manifest["cpu_checks"] = record["cpu_checks"]
    except OSError as exc:  # a read-only build still runs: the check is repeated next time
        log.warning("could not record the re-check in %s (%s); it will run again next time", folder, exc)
    return {net: r["use"] for net, r in results.items()}
