#!/usr/bin/env python
"""Per-clip labels of a build on labelled clips (default: the six CREMA-D clips of ../shared/data), through the live
loop at --speed max: the last estimate of each clip (its whole length in the window) and the mean of the raw
per-estimate probabilities, per modality and fused.

    python scripts/report_starter_clips.py                                   # starter CPU build in engines/
    python scripts/report_starter_clips.py --engines engines/starter/cpu --json runs/starter/clips.json

Each clip is scored twice: against the acted emotion, and the way CREMA-D's perception study saw it
(``--votes``, default ``../shared/data/crema-d-votes/summaryTable.csv``): the audio head against the voice-only vote,
the vision head against the face-only vote, the fused head against the audio-visual vote and the text head against
neutral (every CREMA-D sentence is neutral); a vote split between several codes counts as a hit for any of them.

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


VOTE_NAME = {"text": "sentence (neutral)", "audio": "voice vote", "vision": "face vote", "fused": "audio-visual vote"}


def perceived(path: Path) -> dict[str, dict[str, list[str]]]:
    """clip stem -> {text, audio, vision, fused: perceived class names} from CREMA-D's votes ({} without the file)."""
    from edge.labels import CLASSES
    from edge.train.crema_votes import read_crema_votes

    if not path.is_file():
        return {}
    return {r.file: {"text": ["neutral"], "audio": [CLASSES[i] for i in r.voice],
                     "vision": [CLASSES[i] for i in r.face], "fused": [CLASSES[i] for i in r.multi]}
            for r in read_crema_votes(path)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=Path, default=ROOT.parent / "shared" / "data" / "crema-d-samples",
                   help="folder with labels.csv (file, emotion) and the clips")
    p.add_argument("--profile", default="starter")
    p.add_argument("--engines", default="", help="build folder (default: engines/<profile>/cpu, built if missing)")
    p.add_argument("--asr", default="pocketsphinx")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--votes", type=Path, default=ROOT.parent / "shared" / "data" / "crema-d-votes" / "summaryTable.csv",
                   help="CREMA-D's summaryTable.csv (per-modality votes); missing: only the acted emotion is scored")
    args = p.parse_args(argv)
    votes = perceived(args.votes)
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
                        "last_probs": {o: last.probs.get(o) for o in OUTPUTS},
                        "uncertain": last.uncertain, "uncertain_reasons": list(last.uncertain_reasons),
                        "votes": votes.get(Path(row["file"]).stem)})
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
    if votes:
        lines += ["", "Scored the way the perception study saw the clips (each head against its own modality's vote; "
                  "a split vote counts either way):", "",
                  "| clip | text vs neutral | audio vs voice vote | vision vs face vote | fused vs audio-visual vote |",
                  "|---|---|---|---|---|"]
        for r in results:
            if not r["estimates"] or not r["votes"]:
                continue
            cells = [f"{r['last'][o]} vs {':'.join(r['votes'][o])} {'(hit)' if r['last'][o] in r['votes'][o] else ''}"
                     for o in OUTPUTS]
            lines.append(f"| {r['file']} | " + " | ".join(cells) + " |")
        for o in OUTPUTS:
            hits = sum(1 for r in results if r["estimates"] and r["votes"] and r["last"][o] in r["votes"][o])
            lines.append(f"\n{o}: {hits} / {len(results)} clips as the perception study's {VOTE_NAME[o]}")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
