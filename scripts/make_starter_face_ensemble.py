#!/usr/bin/env python
"""Compose the starter's face encoder from trained members: mirrored test-time augmentation and concatenated
features, one ONNX file (edge.build.face_ensemble), selected on FER2013's held-out tenth.

    python scripts/make_starter_face_ensemble.py A.onnx B.onnx --out runs/starter/vision-ens/encoder.onnx
    python scripts/make_starter_face_ensemble.py A.onnx B.onnx --out E.onnx --no-probe   # compose and check only

1. Composes the members (each ``faces`` (B, 3, 48, 48) -> ``features`` (B, D_i), e.g. ``encoder.onnx`` files written by
   ``scripts/train_starter_vision.py``) into ``--out``: ``features`` (B, sum D_i), each member's features averaged
   over the face and its mirror image (``--no-mirror``: plain concatenation).
2. Checks the composed file against its members run one by one in ONNX Runtime on real FER2013 faces (max abs
   difference <= 1e-4, else nothing is written).
3. With the probe (default), fits one linear probe per feature set on FER2013 train (the 90 % the encoders were
   trained on; seed-0 stratified split, as ``train_starter_vision.py`` and ``make_starter_composite.py`` split it) and
   reports its accuracy on the held-out tenth: each member plain, each member mirrored, the composition.  That is the
   selection evidence; the public test is not read.  Writes ``summary.json`` beside ``--out``.

Reads ``../shared/data/fer2013/train.npz`` (never copy it into the repository).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.build.face_ensemble import check_face_ensemble, compose_face_ensemble  # noqa: E402
from edge.errors import InputError  # noqa: E402
from edge.features.vision_pre import normalize_faces  # noqa: E402
from edge.fileio import write_text_atomic  # noqa: E402

log = logging.getLogger("edge")
#: Composition must reproduce its members to this (float32 rounding of the same operators).
PARITY_ATOL = 1e-4


def _fer(path: Path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import train_starter_vision as V  # the loader and split the encoders were trained with

    images, labels = V.load_npz(path / "train.npz")
    tr, va = V.split_validation(labels, 0.1, 0)
    return V, images, labels, tr, va


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, *,
                   epochs: int = 60, seed: int = 0) -> float:
    """Accuracy on (val_x, val_y) of a linear softmax probe fitted on standardised (train_x, train_y) with Adam."""
    import torch

    torch.manual_seed(seed)
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a = torch.from_numpy((train_x - mu) / sd).float()
    b = torch.from_numpy((val_x - mu) / sd).float()
    y = torch.from_numpy(train_y.astype(np.int64))
    lin = torch.nn.Linear(a.shape[1], int(max(train_y.max(), val_y.max())) + 1)
    opt = torch.optim.Adam(lin.parameters(), 1e-2, weight_decay=1e-4)
    for _ in range(epochs):
        perm = torch.randperm(len(a))
        for i in range(0, len(a), 1024):
            j = perm[i:i + 1024]
            loss = torch.nn.functional.cross_entropy(lin(a[j]), y[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float((lin(b).argmax(1).numpy() == val_y).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("members", nargs="+", type=Path, help="face encoder ONNX files (faces -> features)")
    p.add_argument("--out", type=Path, required=True, help="the composed ONNX file")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fer2013")
    p.add_argument("--no-mirror", action="store_true", help="concatenate only, no mirrored test-time augmentation")
    p.add_argument("--no-probe", action="store_true", help="compose and check only (no linear probes)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    mirror = not args.no_mirror
    if not (args.data / "train.npz").is_file():
        print(f"error: {args.data / 'train.npz'} not found; pass --data pointing at the shared fer2013 folder",
              file=sys.stderr)
        return 2
    V, images, labels, tr, va = _fer(args.data)
    faces = normalize_faces(V.grey_to_rgb_faces(images[va[:64]], 48), size=48)
    tmp = args.out.with_name(f".{args.out.name}.candidate")
    try:
        model = compose_face_ensemble(args.members, tmp, mirror=mirror)
        diff = check_face_ensemble(tmp, args.members, faces, mirror=mirror, threads=args.threads)
    except InputError as exc:
        tmp.unlink(missing_ok=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if diff > PARITY_ATOL:
        tmp.unlink(missing_ok=True)
        print(f"error: the composed graph differs from its members by {diff:.3g} (> {PARITY_ATOL}); nothing written",
              file=sys.stderr)
        return 1
    tmp.replace(args.out)
    dim = int(model.graph.output[0].type.tensor_type.shape.dim[1].dim_value)
    summary = {"out": str(args.out), "members": [str(m) for m in args.members], "mirror": mirror, "dim": dim,
               "bytes": args.out.stat().st_size, "parity_max_abs_diff_64_faces": diff,
               "command": " ".join(["python", "scripts/make_starter_face_ensemble.py", *(argv or sys.argv[1:])])}
    log.info("composed %s: %d features, max abs diff %.2g against its members on 64 FER faces", args.out, dim, diff)
    if not args.no_probe:
        started = time.perf_counter()
        probes: dict[str, float] = {}
        sets = []
        for member in args.members:
            plain = V.onnx_features(member, images, 48, args.threads, batch=512)
            flipped = V.onnx_features(member, images, 48, args.threads, mirror=True, batch=512)
            both = 0.5 * (plain + flipped)
            sets.append(both if mirror else plain)
            probes[f"{member.name} plain"] = probe_accuracy(plain[tr], labels[tr], plain[va], labels[va])
            probes[f"{member.name} mirrored"] = probe_accuracy(both[tr], labels[tr], both[va], labels[va])
            log.info("%s: held-out tenth %.4f plain, %.4f mirrored", member, probes[f"{member.name} plain"],
                     probes[f"{member.name} mirrored"])
        joined = np.concatenate(sets, axis=1)
        probes["composed"] = probe_accuracy(joined[tr], labels[tr], joined[va], labels[va])
        log.info("composed: held-out tenth %.4f", probes["composed"])
        summary["probe"] = {"what": "linear probe fitted on FER2013 train (90 %), accuracy on the held-out tenth",
                            "train": int(len(tr)), "validation": int(len(va)), "accuracy": probes,
                            "seconds": round(time.perf_counter() - started, 1)}
    write_text_atomic(args.out.with_name("summary.json"), json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
