#!/usr/bin/env python
"""Per-clip labels of a build on labelled clips (default: the six CREMA-D clips of ../shared/data), through the live
loop at --speed max: the last estimate of each clip (its whole length in the window) and the mean of the raw
per-estimate probabilities, per modality and fused.

    python scripts/report_starter_clips.py                                   # starter CPU build in engines/
    python scripts/report_starter_clips.py --engines engines/starter/cpu --json runs/starter/clips.json

Prints a markdown table; ``--json`` also writes every figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.stream.config import RunConfig  # noqa: E402
from edge.stream.estimate import OUTPUTS  # noqa: E402
from edge.stream.recognizer import Recognizer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=Path, default=ROOT.parent / "shared" / "data" / "crema-d-samples",
                   help="folder with labels.csv (file, emotion) and the clips")
    p.add_argument("--profile", default="starter")
    p.add_argument("--engines", default="", help="build folder (default: engines/<profile>/cpu, built if missing)")
    p.add_argument("--asr", default="pocketsphinx")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    table = args.clips / "labels.csv"
    if not table.is_file():
        raise SystemExit(f"{table} not found; pass --clips FOLDER with labels.csv (file, emotion)")
    with table.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    results = []
    for row in rows:
        config = RunConfig(profile=args.profile, engines=args.engines, video=str(args.clips / row["file"]),
                           speed="max", asr=args.asr, threads=args.threads)
        recognizer = Recognizer(config)
        got = []
        recognizer.on_estimate(got.append)
        recognizer.start()
        recognizer.wait()
        recognizer.stop()
        if not got:
            results.append({"file": row["file"], "truth": row["emotion"], "estimates": 0})
            continue
        last = got[-1]
        mean = {}
        for o in OUTPUTS:
            raw = [e.raw[o] for e in got if e.raw.get(o) is not None]
            mean[o] = None if not raw else last.classes[int(np.argmax(np.mean(raw, axis=0)))]
        results.append({"file": row["file"], "truth": row["emotion"], "estimates": len(got),
                        "last": {o: last.label(o) for o in OUTPUTS}, "mean": mean, "transcript": last.transcript,
                        "last_probs": {o: last.probs.get(o) for o in OUTPUTS}})
    lines = ["| clip | truth | fused | text | audio | vision | fused (mean) | transcript |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if not r["estimates"]:
            lines.append(f"| {r['file']} | {r['truth']} | (no estimate) | | | | | |")
            continue
        last = r["last"]
        lines.append(f"| {r['file']} | {r['truth']} | {last['fused']} | {last['text']} | {last['audio']} | "
                     f"{last['vision']} | {r['mean']['fused']} | {r['transcript']} |")
    for o in OUTPUTS:
        hits = sum(1 for r in results if r["estimates"] and r["last"][o] == r["truth"])
        lines.append(f"\n{o}: {hits} / {len(results)} clips labelled as acted (last estimate)")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
