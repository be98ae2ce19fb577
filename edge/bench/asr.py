"""``edge-bench asr``: word / character error rate, compute and transcript latency of each speech recognizer on real
recorded speech and on espeak-ng speech, with the naive baseline (pocketsphinx) in the same run.

Per utterance, as in the live loop: the audio is decoded (ffmpeg), cut by the real Silero VAD (:class:`VADSegmenter`,
fed 0.1 s chunks, with one second of silence after the utterance so its end is seen), and each speech segment is
transcribed as a final transcript; the hypothesis is the segments' texts joined.  ``--segments whole`` transcribes
the whole file instead (the recognizer alone, no VAD).

- WER (English) / CER (Mandarin): total edits / total reference units over a set, after
  :mod:`edge.asr.scoring`'s normalisation of both sides (its notes say how).
- compute: seconds per utterance (p50 / p95 / max) and per media second (total compute / total audio); the
  largest per-utterance ratio too (the "no utterance over 3 s per audio second" target).
- latency: end of speech (the VAD's segment end) -> final transcript = the time the VAD needed to see the end
  (media seconds: its silence rule) + the compute of that transcript on an otherwise idle recognizer (p50 / p95).

A system is ``NAME[:MODEL][@key=value;key=value]``: ``pocketsphinx``, ``whisper`` (the packaged model),
``whisper:DIR`` / ``whisper:small``, ``whisper@window_s=10;language=set`` (options are
:class:`~edge.asr.whisper_ct2.WhisperOptions` fields; ``language=set`` decodes each set in its own language, absent:
detected per utterance).  One warm-up transcription per system is not timed.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edge._lazy import lazy_import
from edge.bench.asr_data import SETS, Utterance, load_set
from edge.errors import EdgeError, InputError

log = logging.getLogger("edge")

FORMAT = "lfmim-edge-bench-asr/1"
CHUNK_S = 0.1
TAIL_S = 1.0
SAMPLE_RATE = 16_000


def parse_system(text: str) -> dict[str, Any]:
    """``NAME[:MODEL][@k=v;k=v]`` -> {label, backend, model, options}."""
    head, _, opts = text.strip().partition("@")
    backend, _, model = head.partition(":")
    if backend not in ("pocketsphinx", "whisper", "whisper-onnx"):
        raise InputError(f"system {text!r}: the backend must be pocketsphinx, whisper or whisper-onnx")
    options: dict[str, Any] = {}
    for item in filter(None, (o.strip() for o in opts.split(";"))):
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"system {text!r}: option {item!r} is not key=value")
        options[key.strip()] = _value(value.strip())
    if backend == "pocketsphinx" and (model or options):
        raise InputError(f"system {text!r}: pocketsphinx takes no model or options here")
    return {"label": text.strip(), "backend": backend, "model": model, "options": options}


def _value(text: str) -> Any:
    if text.lower() in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _pct(values: Sequence[float], q: float) -> float | None:
    return None if not values else round(float(np.percentile(values, q)), 4)


def segments(samples: np.ndarray, vad_model: Any) -> list[tuple[float, float, np.ndarray]]:
    """VAD speech segments of one utterance: (end of speech, VAD delay in media s, audio), as the live loop cuts."""
    from edge.stream.vad import SileroVAD, VADSegmenter

    segmenter = VADSegmenter(SileroVAD(model=vad_model))
    x = np.concatenate([samples, np.zeros(int(TAIL_S * SAMPLE_RATE), np.float32)])
    step = int(CHUNK_S * SAMPLE_RATE)
    out = []
    for i in range(0, x.size, step):
        known_at = min(i + step, x.size) / SAMPLE_RATE
        for event in segmenter.push(x[i:i + step], i / SAMPLE_RATE):
            if type(event).__name__ == "SpeechEnd":
                out.append((float(event.t), max(0.0, known_at - float(event.t)), np.asarray(event.audio)))
    for event in segmenter.flush():
        if type(event).__name__ == "SpeechEnd":
            out.append((float(event.t), max(0.0, x.size / SAMPLE_RATE - float(event.t)), np.asarray(event.audio)))
    return out


def _open(system: dict[str, Any], threads: int) -> Any:
    from edge.asr.registry import plan_asr, open_planned

    plan = plan_asr(system["backend"], model=system["model"], threads=threads)
    options = {k: v for k, v in system["options"].items() if k != "language"}
    return open_planned(plan, **options)


def _for_set(asr: Any, system: dict[str, Any], language: str) -> Any:
    """The recognizer as it runs on a set of ``language``: ``language=set`` fixes Whisper's language."""
    wanted = system["options"].get("language")
    if system["backend"] == "whisper" and wanted is not None:
        return asr.with_options(language=language if wanted == "set" else wanted)
    return asr


def _supports(system: dict[str, Any], language: str) -> bool:
    return system["backend"] != "pocketsphinx" or language == "en"


def bench_asr(systems: Sequence[str], *, sets: Sequence[str] = ("ravdess", "crema-d", "esd", "espeak", "aishell"),
              split: str = "all", limit: int = 0, whole: bool = False, threads: int = 0, progress: bool = False,
              on_update: Callable[[dict[str, Any]], None] | None = None, root: Path | None = None) -> dict[str, Any]:
    """Run every system over every set; returns a JSON-ready dict with ``rows`` (per system x set), per-utterance
    ``utterances`` and ``failures`` (a system that does not open is recorded and the others still run)."""
    from edge.asr.scoring import edit_counts
    from edge.bench.system import machine_info
    from edge.media import read_audio

    parsed = [parse_system(s) for s in systems]
    if not parsed:
        raise InputError("no system to benchmark; e.g. --systems pocketsphinx,whisper")
    bad = [s for s in sets if s not in SETS]
    if bad or not sets:
        raise InputError(f"unknown set(s) {', '.join(bad) or '(none)'}; known: {', '.join(SETS)}")
    if limit < 0:
        raise InputError(f"--limit must be 0 (all) or more, got {limit}")
    data = {name: load_set(name, root=root, split=split, limit=limit) for name in sets}
    tqdm = lazy_import("tqdm").tqdm
    result: dict[str, Any] = {
        "format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_info(),
        "settings": {"systems": list(systems), "sets": list(sets), "split": split, "limit": limit,
                     "segments": "whole" if whole else "vad", "threads": threads,
                     "utterances": {k: len(v) for k, v in data.items()}},
        "rows": [], "utterances": [], "failures": []}
    audio_cache: dict[Path, Any] = {}
    vad_model = None
    if not whole:
        from edge.stream.vad import SileroVADModel

        vad_model = SileroVADModel(threads=1)

    def prepared(u: Utterance) -> Any:
        if u.path not in audio_cache:
            x, _ = read_audio(u.path)
            audio_cache[u.path] = (x, [(x.size / SAMPLE_RATE, 0.0, x)] if whole else segments(x, vad_model))
        return audio_cache[u.path]

    total = sum(len(v) for name, v in data.items() for s in parsed if _supports(s, v[0].language if v else "en"))
    with tqdm(total=total, desc="asr", unit="utt", disable=not progress) as bar:
        for system in parsed:
            load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
            started = time.perf_counter()
            try:
                asr = _open(system, threads)
            except EdgeError as exc:
                result["failures"].append({"system": system["label"], "error": str(exc)})
                log.warning("%s: cannot open: %s", system["label"], exc)
                continue
            open_s = time.perf_counter() - started
            try:
                for name, items in data.items():
                    if not items or not _supports(system, items[0].language):
                        continue
                    recognizer = _for_set(asr, system, items[0].language)
                    recognizer.transcribe(prepared(items[0])[0][: SAMPLE_RATE * 3])  # warm-up, not timed
                    row = _run_set(recognizer, system, name, items, prepared, edit_counts, result, bar)
                    row.update(open_s=round(open_s, 2), load_average_start=load0,
                               load_average_end=os.getloadavg() if hasattr(os, "getloadavg") else None)
                    result["rows"].append(row)
                    if on_update is not None:
                        on_update(result)
            finally:
                asr.close()
    return result


def _run_set(asr: Any, system: dict[str, Any], name: str, items: list[Utterance], prepared: Callable,
             edit_counts: Callable, result: dict[str, Any], bar: Any) -> dict[str, Any]:
    errors = units = 0
    compute, ratios, latency, vad_delay, media = [], [], [], [], 0.0
    empty = 0
    for u in items:
        x, segs = prepared(u)
        texts, spent = [], 0.0
        for _, delay, audio in segs:
            t0 = time.perf_counter()
            text = asr.transcribe(audio).text.strip()
            seconds = time.perf_counter() - t0
            spent += seconds
            latency.append(delay + seconds)
            vad_delay.append(delay)
            ratios.append(seconds / max(audio.size / SAMPLE_RATE, 1e-3))
            if text:
                texts.append(text)
        hyp = " ".join(texts)
        e, n = edit_counts(u.text, hyp, language=u.language)
        errors, units = errors + e, units + n
        empty += not hyp
        compute.append(spent)
        media += x.size / SAMPLE_RATE
        result["utterances"].append({"system": system["label"], "set": name, "id": u.id, "ref": u.text, "hyp": hyp,
                                     "errors": e, "units": n, "segments": len(segs), "compute_s": round(spent, 4),
                                     "media_s": round(x.size / SAMPLE_RATE, 3)})
        bar.update(1)
    metric = "wer" if items[0].language == "en" else "cer"
    return {"system": system["label"], "set": name, "language": items[0].language, "metric": metric,
            "utterances": len(items), "units": units, "errors": errors,
            "rate": round(errors / units, 4) if units else None, "no_transcript": empty,
            "compute_s": {"p50": _pct(compute, 50), "p95": _pct(compute, 95), "max": _pct(compute, 100)},
            "compute_per_media_s": round(sum(compute) / max(media, 1e-9), 4),
            "max_compute_per_audio_s": _pct(ratios, 100),
            "latency_s": {"p50": _pct(latency, 50), "p95": _pct(latency, 95)},
            "vad_delay_s": {"p50": _pct(vad_delay, 50)}, "media_s": round(media, 2),
            "mean_compute_s": round(statistics.fmean(compute), 4) if compute else None}


def to_markdown(result: dict[str, Any]) -> str:
    """A caption, one line per system x set, and the failures."""
    from edge.bench.models import _fmt as f

    m, s = result.get("machine", {}), result.get("settings", {})
    lines = [f"CPU: {m.get('cpu')} ({m.get('usable_cores')} usable of {m.get('cores')} cores); load average at start "
             f"{m.get('load_average')}; split {s.get('split')}, limit {s.get('limit') or 'none'}, segments "
             f"{s.get('segments')}, threads {s.get('threads') or 'default'}. WER / CER after normalisation "
             "(edge.asr.scoring); latency = VAD end-of-speech delay + compute of the final transcript.", "",
             "| system | set | n | WER / CER | no text | compute s / utt p50 / p95 | compute s per media s "
             "| max per audio s | latency s p50 / p95 | load start -> end |",
             "|---|---|---:|---:|---:|---|---:|---:|---|---|"]
    for r in result.get("rows", []):
        c, lat = r["compute_s"], r["latency_s"]
        load = (f"{f((r.get('load_average_start') or [None])[0], '.2f')} -> "
                f"{f((r.get('load_average_end') or [None])[0], '.2f')}")
        lines.append(f"| {r['system']} | {r['set']} | {r['utterances']} | {r['metric'].upper()} "
                     f"{f(r['rate'], '.3f')} | {r['no_transcript']} | {f(c['p50'], '.2f')} / {f(c['p95'], '.2f')} | "
                     f"{f(r['compute_per_media_s'], '.3f')} | {f(r['max_compute_per_audio_s'], '.2f')} | "
                     f"{f(lat['p50'], '.2f')} / {f(lat['p95'], '.2f')} | {load} |")
    for fail in result.get("failures", []):
        lines.append(f"| {fail['system']} | - | - | FAILED: {fail['error'].replace('|', '/')[:160]} | | | | | | |")
    return "\n".join(lines) + "\n"


__all__ = ["bench_asr", "parse_system", "segments", "to_markdown"]
