#!/usr/bin/env python
"""Put the trained starter networks into the package (edge/assets/starter/): FP32 ONNX of every network, the
statically quantized variants calibrated on real data, and assets.json.

    python scripts/package_starter.py                 # runs/starter/{vision,audio,audio-whisper,lfmim}, ../shared/data
    python scripts/package_starter.py --from-assets   # re-package what the package already ships (new INT8 form)
    python scripts/package_starter.py --from-assets --lfmim runs/starter/lfmim/best.safetensors   # one file replaced

1. Takes the FP32 networks trained here: the face encoder (``vision.fp32.onnx``), the starter's audio encoder, the
   projected Whisper front (``audio-whisper.fp32.onnx``), the log-mel CNN audio encoder that starter-zh reads
   (``audio.fp32.onnx``) and the LFMIM checkpoint (``lfmim.safetensors`` + ``lfmim.json``); ``--vision``, ``--audio``,
   ``--audio-whisper`` and ``--lfmim`` replace one of them (also with ``--from-assets``).
2. Builds the starter profile (``--precision int8``, targets cpu and gpu) *without* its shipped variants, so the
   statically quantized networks (the face encoder in the ``resnet18`` slot, MTCNN's O-Net) are calibrated on the
   real clips of ``calibration/recipes.toml`` and every variant is gated on real held-out samples (a failed gate stops
   the packaging).  The CPU variants use 7-bit weights (``edge.prepare.policy``): their fidelity does not depend on
   the processor.  A user's machine has no calibration data: the quantized files are copied into the package
   (``<network>.int8.<target>.onnx``) and used by every later starter build instead of calibrating.
3. Ships the FP32 ONNX exports of MTCNN's P-, R- and O-Net and of LFMIM, so a kiosk prepares the whole build without
   torch (``shipped = "asset:starter"``; MiniLM is written to ONNX from its registry package on the user's machine).
4. Writes ``assets.json``: each file's SHA-256 and size, where it came from (relative paths only), and the gate
   figures measured here.  The package stays under 60 MiB.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.build.builder import BuildOptions, build  # noqa: E402
from edge.fileio import sha256_file, write_text_atomic  # noqa: E402

ASSETS = ROOT / "edge" / "assets" / "starter"
STATIC = ("resnet18", "onet")
SHIPPED_FP32 = ("pnet", "rnet", "onet", "lfmim")
LIMIT_BYTES = 60 * 1024 * 1024
KEEP = ("assets.json", "MODEL_CARD.md", "__init__.py")


def _relative(value: Any) -> Any:
    """``value`` with every absolute path inside it made relative to the repository or its data folder (assets.json
    must not carry the packaging machine's paths)."""
    if isinstance(value, dict):
        return {k: _relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        path = Path(value)
        for base, label in ((ROOT.parent / "shared" / "data", "<data>"), (ROOT, "")):
            if path.is_relative_to(base):
                rel = path.relative_to(base)
                if not label:
                    return str(rel)
                return label if rel == Path(".") else f"{label}/{rel}"
        return path.name
    return value


def _origin(src: Path, shipped: str | None) -> str:
    """Where a packaged file came from: the asset it already was (its recorded origin), else its path relative to the
    repository, else its name (never this machine's absolute path)."""
    src = src.resolve()
    if src.is_relative_to(ASSETS.resolve()) and shipped:
        return shipped
    return str(src.relative_to(ROOT)) if src.is_relative_to(ROOT) else src.name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "starter")
    p.add_argument("--from-assets", action="store_true",
                   help="take the FP32 networks the package already ships (re-package them, e.g. in a new INT8 form)")
    p.add_argument("--vision", type=Path, default=None, help="face encoder ONNX (default: RUNS/vision/encoder.onnx)")
    p.add_argument("--audio", type=Path, default=None,
                   help="log-mel CNN audio encoder ONNX, starter-zh's (default: RUNS/audio/encoder.onnx)")
    p.add_argument("--audio-whisper", type=Path, default=None,
                   help="projected Whisper front, the starter's audio encoder "
                        "(default: RUNS/audio-whisper/encoder.onnx)")
    p.add_argument("--lfmim", type=Path, default=None, help="LFMIM checkpoint (default: RUNS/lfmim/best.safetensors)")
    p.add_argument("--calibration-data", default=None, help="data folder (default: ../shared/data)")
    p.add_argument("--build-root", type=Path, default=None, help="where the packaging builds go (default: RUNS/package-build)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    with tempfile.TemporaryDirectory(prefix="starter-package-") as tmp_name:
        tmp = Path(tmp_name)
        explicit = {"vision.fp32.onnx": args.vision, "audio.fp32.onnx": args.audio,
                    "audio-whisper.fp32.onnx": args.audio_whisper, "lfmim.safetensors": args.lfmim}
        if args.from_assets:  # copy first: the asset folder is emptied below
            defaults = {name: ASSETS / name for name in explicit}
        else:
            defaults = {"vision.fp32.onnx": args.runs / "vision" / "encoder.onnx",
                        "audio.fp32.onnx": args.runs / "audio" / "encoder.onnx",
                        "audio-whisper.fp32.onnx": args.runs / "audio-whisper" / "encoder.onnx",
                        "lfmim.safetensors": args.runs / "lfmim" / "best.safetensors"}
        sources = {name: explicit[name] or defaults[name] for name in explicit}
        lfmim = sources["lfmim.safetensors"]
        if lfmim.with_suffix(".json").is_file():
            sources["lfmim.json"] = lfmim.with_suffix(".json")
        previous = json.loads((ASSETS / "assets.json").read_text()) if (ASSETS / "assets.json").is_file() else {}
        origin = {name: _origin(src, (previous.get("files", {}).get(name) or {}).get("source"))
                  for name, src in sources.items()}
        for path in sources.values():
            if not path.is_file():
                raise SystemExit(f"{path} not found; train it first (see edge/assets/starter/MODEL_CARD.md) or "
                                 "pass --vision / --audio / --audio-whisper / --lfmim")
        files = {}
        for name, src in sources.items():
            files[name] = tmp / name
            shutil.copyfile(src, files[name])
        backup = tmp / "shipped"  # what ships now: put back if anything below fails
        backup.mkdir()
        for path in ASSETS.iterdir() if ASSETS.is_dir() else ():
            if path.is_file():
                shutil.copy2(path, backup / path.name)
        try:
            ASSETS.mkdir(parents=True, exist_ok=True)
            for stale in ASSETS.iterdir():
                if stale.is_file() and stale.name not in KEEP:
                    stale.unlink()
            for name, src in files.items():
                shutil.copyfile(src, ASSETS / name)
            # the manifest must not name the quantized files yet: the packaging builds must calibrate them
            (ASSETS / "assets.json").unlink(missing_ok=True)

            profile_text = (ROOT / "edge" / "profiles" / "starter.toml").read_text(encoding="utf-8")
            unquantized = re.sub(r"(?m)^(prequantized|shipped)\s*=.*$", "", profile_text)
            build_root = args.build_root or args.runs / "package-build"
            records: dict[str, dict] = {}
            gates: dict[str, dict] = {}
            profile = tmp / "starter.toml"
            profile.write_text(unquantized, encoding="utf-8")
            for target in ("cpu", "gpu"):
                manifest_path = build(BuildOptions(profile=str(profile), precision="int8", target=target,
                                                   out_root=str(build_root), calibration_data=args.calibration_data,
                                                   tensorrt="off", threads=1, select="asked"))
                manifest = json.loads(Path(manifest_path).read_text())
                out = Path(manifest_path).parent
                gates[target] = {n: {"precision": e["precision"], "fidelity": _relative(e.get("fidelity")),
                                     "timing": e.get("timing")} for n, e in manifest["networks"].items()}
                for name in STATIC:
                    entry = manifest["networks"][name]
                    if entry["precision"] != "int8":
                        raise SystemExit(f"{name} for {target}: the packaging build kept {entry['precision']} "
                                         f"({entry.get('selection', {}).get('reason')}); nothing to ship")
                    dst = f"{name}.int8.{target}.onnx"
                    shutil.copyfile(out / entry["variant_onnx"]["file"], ASSETS / dst)
                    records[dst] = _relative({"quantization": entry.get("quantization"), "fidelity": entry.get("fidelity"),
                                              "calibration": manifest.get("calibration"), "cpu": manifest.get("cpu")})
                    origin[dst] = ("scripts/package_starter.py (calibrated on the real clips calibration/recipes.toml draws from "
                                   f"{records[dst]['calibration']['data']}, ../shared/data)")
                if target == "cpu":
                    for name in SHIPPED_FP32:
                        dst = f"{name}.fp32.onnx"
                        shutil.copyfile(out / manifest["networks"][name]["fp32_onnx"]["file"], ASSETS / dst)
                        origin[dst] = ("edge-build export of facenet-pytorch 2.6.0's weights (MIT)" if name != "lfmim"
                                       else "edge-build export of lfmim.safetensors")
            body = {"format": "lfmim-edge-assets/1", "profile": "starter", "files": {}, "packaging_gates": gates,
                    "command": "python scripts/package_starter.py " + " ".join(sys.argv[1:] if argv is None else argv)}
            total = 0
            for path in sorted(ASSETS.iterdir()):
                if path.name in KEEP or path.is_dir():
                    continue
                size = path.stat().st_size
                total += size
                body["files"][path.name] = {"sha256": sha256_file(path), "size_bytes": size, "source": origin.get(path.name),
                                            **records.get(path.name, {})}
            body["total_bytes"] = total
            if total > LIMIT_BYTES:
                raise SystemExit(f"starter assets take {total / 2**20:.1f} MiB, over the {LIMIT_BYTES >> 20} MiB budget")
            text = json.dumps(body, indent=2) + "\n"
            if str(ROOT) in text or str(ROOT.parent) + "/" in text:
                raise SystemExit("assets.json would name an absolute path of this machine; fix _relative()")
            write_text_atomic(ASSETS / "assets.json", text)
        except BaseException:
            for path in ASSETS.iterdir():
                if path.is_file() and path.name not in KEEP:
                    path.unlink()
            for path in backup.iterdir():
                shutil.copy2(path, ASSETS / path.name)
            print(f"packaging failed; {ASSETS} is as it was", file=sys.stderr)
            raise
    print(json.dumps({"files": {k: v["size_bytes"] for k, v in body["files"].items()}, "total_mib": round(total / 2**20, 2),
                      "gates": {t: {n: (g["fidelity"] or {}).get("passed") for n, g in gs.items()}
                                for t, gs in gates.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    from edge.errors import EdgeError

    try:
        raise SystemExit(main())
    except EdgeError as exc:  # a user mistake (a bad file, missing data): one line, not a traceback
        raise SystemExit(f"package_starter.py: {exc}") from None
