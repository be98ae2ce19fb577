#!/usr/bin/env python
"""Calibrate the shipped starter LFMIM's heads on validation data and ship the result (issue: confidences that mean
what they say).

    python scripts/make_starter_composite.py --out runs/calib/composite --audio-encoder edge/assets/starter/audio.fp32.onnx \
        --vision-encoder edge/assets/starter/vision.fp32.onnx --audio-variants 1 --own-draws 0
    python scripts/calibrate_starter.py --store runs/calib/composite

Each head is fitted on its own modality's validation split of the composite store (text: GoEmotions dev, audio:
RAVDESS actors 17-18, vision: the tenth of FER2013 train held out from the face encoder's training (2,872 faces),
fused: the composite valid split; never a test split) with
``edge-eval --calibrate --method temperature+prior`` (a temperature and a per-class logit bias: the uni-modal heads
learned EmotionTalk's label priors, which the bias takes back out).  The calibrated checkpoint and its sidecar replace
``edge/assets/starter/lfmim.safetensors`` / ``lfmim.json`` (atomically) and their ``assets.json`` entries are
updated; the ONNX graph does not change: builds copy the calibration into their manifest and the run path applies
it (``edge.confidence``).  Then every test split is evaluated (ECE before / after, reliability diagrams) into
``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ASSETS = ROOT / "edge" / "assets" / "starter"
HEAD_SPLITS = {"t": "goemotions_valid", "a": "ravdess_valid", "v": "fer_valid", "m": "valid"}
#: (report folder, split, extra edge-eval arguments)
TESTS = (("fer_test", "fer_test", []), ("ravdess_test", "ravdess_test", []), ("goemotions_test", "goemotions_test", []),
         ("test", "test", []), ("test-against-m", "test", ["--against", "m"]), ("crema_test", "crema_test", []))
#: The validation splits the heads are fitted on (--evaluate validation: compare candidates without a test split;
#: "after" is then in-sample).
VALIDATION = tuple((s, s, []) for s in ("fer_valid", "ravdess_valid", "goemotions_valid", "valid"))


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found; install the project: pip install -e '.[train,cpu,build]'")
    return found


def _run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, required=True, help="a starter composite store (make_starter_composite.py)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "calib", help="work folder and reports")
    p.add_argument("--method", default="temperature+prior", choices=("temperature", "temperature+prior"))
    p.add_argument("--no-ship", action="store_true", help="calibrate and report, leave edge/assets alone")
    p.add_argument("--checkpoint", type=Path, default=ASSETS / "lfmim.safetensors",
                   help="the LFMIM checkpoint to calibrate (default: the shipped one); with another, --no-ship: a "
                        "candidate is compared on validation first, packaged (package_starter.py), then calibrated")
    p.add_argument("--evaluate", choices=("test", "validation"), default="test",
                   help="which splits to report after fitting: the test splits (once, for the shipped model) or the "
                        "validation splits (to choose between candidates; 'after' is in-sample there)")
    args = p.parse_args(argv)
    if args.evaluate == "validation" and not args.no_ship:
        raise SystemExit("--evaluate validation compares candidates: add --no-ship")
    if args.checkpoint.resolve() != (ASSETS / "lfmim.safetensors").resolve() and not args.no_ship:
        raise SystemExit(f"--checkpoint {args.checkpoint}: only the shipped checkpoint is calibrated for shipping; "
                         "add --no-ship to evaluate a candidate, or package it first (scripts/package_starter.py)")
    if not args.checkpoint.is_file() or not args.checkpoint.with_suffix(".json").is_file():
        raise SystemExit(f"--checkpoint {args.checkpoint}: expected a .safetensors file with its .json sidecar")
    from edge.fileio import sha256_file, write_bytes_atomic, write_text_atomic

    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = args.out / "lfmim.safetensors"
    shutil.copyfile(args.checkpoint, ckpt)
    shutil.copyfile(args.checkpoint.with_suffix(".json"), ckpt.with_suffix(".json"))
    splits = [a for h, s in HEAD_SPLITS.items() for a in ("--head-split", f"{h}={s}")]
    _run([_tool("edge-eval"), "--calibrate", "--checkpoint", str(ckpt), "--store", str(args.store), *splits,
          "--method", args.method, "--no-progress", "-q"])
    figures = {}
    for name, split, extra in (TESTS if args.evaluate == "test" else VALIDATION):
        report = args.out / f"eval-{name}"
        _run([_tool("edge-eval"), "--checkpoint", str(ckpt), "--store", str(args.store), "--split", split,
              "--out", str(report), "--no-progress", "-q", *extra])
        heads = json.loads((report / "calibration.json").read_text())["heads"]
        figures[name] = {h: {"n": v["n"], "ece_before": v["before"]["ece"], "ece_after": v["after"]["ece"],
                             "ece_floor_after": v["after"]["ece_floor"],
                             "accuracy_before": v["before"]["accuracy"], "accuracy_after": v["after"]["accuracy"]}
                         for h, v in heads.items()}
    write_text_atomic(args.out / "figures.json", json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    if args.no_ship:
        return 0
    body = json.loads((ASSETS / "assets.json").read_text(encoding="utf-8"))
    for name, src in (("lfmim.safetensors", ckpt), ("lfmim.json", ckpt.with_suffix(".json"))):
        write_bytes_atomic(ASSETS / name, src.read_bytes())
        entry = body["files"][name]
        entry.update(sha256=sha256_file(ASSETS / name), size_bytes=(ASSETS / name).stat().st_size,
                     calibrated_by=f"python scripts/calibrate_starter.py (edge-eval --calibrate --method {args.method}, "
                                   f"heads on {', '.join(f'{h}={s}' for h, s in HEAD_SPLITS.items())})")
    body["calibration_figures"] = figures
    body["total_bytes"] = sum(f["size_bytes"] for f in body["files"].values())
    write_text_atomic(ASSETS / "assets.json", json.dumps(body, indent=2) + "\n")
    print(f"shipped the calibrated checkpoint in {ASSETS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
