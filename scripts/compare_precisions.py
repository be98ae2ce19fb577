#!/usr/bin/env python
"""Each head's accuracy on its own modality's test set *through the run path* of one or more builds, side by side
(issue: "INT8 builds within 0.5 points of FP32 on every target").

    edge-build --profile starter --precision fp32 --out-root runs/eng-fp32
    edge-build --profile starter --precision int8 --out-root runs/eng-int8
    python scripts/compare_precisions.py runs/eng-fp32/starter/cpu runs/eng-int8/starter/cpu --json runs/precisions.json

Every sample goes through the build's own networks and the run path's code (``edge.features.extractors``), then
LFMIM with the other modalities absent, then the build's calibration:

- vision: the FER2013 public test (3,589 48 x 48 faces, grey replicated to RGB; a window of the face and its mirror
  image alternating, as ``compare_face_peer.py``);
- audio: RAVDESS actors 19-20 (120 clips, calm = neutral; each clip decoded and centred in a window of silence of
  the profile's length, 4 s, as the live loop's rolling window holds an utterance; the window's 1 s blocks are
  encoded and fitted to LFMIM's audio frames, as in the composite store);
- text: the GoEmotions-Ekman test sentences with one label (4,968).

Prints accuracy and ECE per head and build, and each build's difference from the first one in points; ``--json``
writes every figure.  Needs no torch (the run path alone).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "scripts"))

from compare_face_peer import lfmim_vision, window_of  # noqa: E402  (the same face window as the peer comparison)
from edge.confidence import expected_calibration_error  # noqa: E402
from edge.labels import to_index  # noqa: E402

TEST_ACTORS = (19, 20)


def _absent(x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = x.profile
    return (np.zeros((p.text.tokens, p.text.dim), np.float32), np.zeros((p.audio.frames, p.audio.dim), np.float32),
            np.zeros((p.vision.frames, p.vision.dim), np.float32))


def subset(n: int, limit: int | None) -> np.ndarray:
    """Indices of every sample, or of ``limit`` spread evenly over the set (quick checks)."""
    return np.arange(n) if not limit or limit >= n else np.linspace(0, n - 1, limit).round().astype(np.int64)


def vision_probs(x, data: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    with np.load(data / "fer2013" / "publictest.npz") as d:
        pick = subset(len(d["labels"]), limit)
        images, labels = d["images"][pick], d["labels"][pick].astype(np.int64)
    rgb = np.repeat(images[..., None], 3, axis=-1)
    feats = x.face_features(rgb)
    mirror = x.face_features(np.ascontiguousarray(rgb[:, :, ::-1]))
    frames = x.profile.vision.frames
    probs = np.stack([lfmim_vision(x, window_of(np.stack([f, m]), frames)) for f, m in zip(feats, mirror)])
    return probs, labels


def ravdess_test(data: Path) -> list[tuple[Path, int]]:
    folder = data / "ravdess-speech"
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["actor"]) in TEST_ACTORS]
    table = folder / "labels.csv"
    if not rows:
        raise SystemExit(f"{table}: no clip of actors {TEST_ACTORS}; expected RAVDESS speech "
                         "(columns file, emotion, intensity, actor, sex)")
    return [(folder / r["file"], to_index(r["emotion"], "ravdess", source=f"{table} {r['file']}")) for r in rows]


def audio_probs(x, data: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    from edge.media import read_audio
    from edge.starter.composite import place_in_window

    text, _, vision = _absent(x)
    clips = ravdess_test(data)
    probs, labels = [], []
    for path, label in (clips[i] for i in subset(len(clips), limit)):
        wave, _ = read_audio(path, sample_rate=x.profile.audio.sample_rate)
        window = place_in_window(wave, x.profile.audio.window_samples, None)
        probs.append(x.fuse(text, x.audio(window), vision)["a"])
        labels.append(label)
    return np.stack(probs), np.asarray(labels, np.int64)


def text_probs(x, data: Path, limit: int | None = None, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    from edge.starter.goemotions import read_goemotions

    texts, labels = read_goemotions(data / "goemotions-ekman" / "test.tsv")
    pick = subset(len(texts), limit)
    texts, labels = [texts[i] for i in pick], np.asarray(labels)[pick]
    _, audio, vision = _absent(x)
    probs = []
    for i in range(0, len(texts), batch):
        for hidden in x.text(texts[i:i + batch]):
            probs.append(x.fuse(hidden, audio, vision)["t"])
    return np.stack(probs), np.asarray(labels, np.int64)


HEADS = (("v", "vision", "FER2013 public test", vision_probs), ("a", "audio", "RAVDESS actors 19-20", audio_probs),
         ("t", "text", "GoEmotions-Ekman test", text_probs))


def measure(build: str, data: Path, threads: int, progress, limit: int | None = None) -> dict:
    from edge.errors import EdgeError
    from edge.features.extractors import Extractors
    from edge.runtime.engines import open_engines

    try:
        engines = open_engines("starter", directory=build, threads=threads)
    except EdgeError as exc:
        raise SystemExit(f"compare_precisions: {build}: {exc}") from None
    out = {"build": build, "precisions": {k: v.get("precision") for k, v in engines.manifest["networks"].items()},
           "heads": {}}
    with engines:
        x = Extractors(engines)
        for head, name, split, fn in HEADS:
            started = time.perf_counter()
            probs, labels = fn(x, data, limit)
            out["heads"][head] = {"name": name, "split": split, "n": int(len(labels)),
                                  "accuracy": float((probs.argmax(1) == labels).mean()),
                                  "ece": expected_calibration_error(probs, labels),
                                  "seconds": round(time.perf_counter() - started, 1)}
            progress(f"{build}: {name} {100 * out['heads'][head]['accuracy']:.2f} % on {len(labels)} ({split})")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("builds", nargs="+", help="starter build folders (engines/starter/cpu, ...); the first is the "
                                             "reference the others are compared with")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="at most this many samples per test set, spread evenly "
                                                            "(a quick check; the figures need the whole sets)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    for name in ("fer2013/publictest.npz", "ravdess-speech/labels.csv", "goemotions-ekman/test.tsv"):
        if not (args.data / name).is_file():
            raise SystemExit(f"--data {args.data}: {name} is missing; point --data at the project's data folder")
    results = [measure(b, args.data, args.threads, lambda m: print(m, file=sys.stderr, flush=True), args.limit)
               for b in args.builds]
    ref = results[0]
    nets = {"v": "resnet18", "a": "audio", "t": "text"}
    lines = ["| head | test set | n | " + " | ".join(r["build"] for r in results) + " |",
             "|---|---|---:|" + "---:|" * len(results)]
    for head, name, split, _ in HEADS:
        cells = []
        for r in results:
            h = r["heads"][head]
            delta = "" if r is ref else f", {100 * (h['accuracy'] - ref['heads'][head]['accuracy']):+.2f} pt"
            cells.append(f"{100 * h['accuracy']:.2f} % (ECE {h['ece']:.3f}; {r['precisions'].get(nets[head])}{delta})")
        lines.append(f"| {name} | {split} | {ref['heads'][head]['n']} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.json:
        from edge.fileio import write_text_atomic

        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.json, json.dumps({"results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
