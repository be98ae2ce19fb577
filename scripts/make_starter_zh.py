#!/usr/bin/env python
"""The whole starter-zh chain, one command: text encoder, composite set, LFMIM, evaluation, packaging.

    python scripts/make_starter_zh.py                                   # -> runs/starter-zh/, edge/assets/starter-zh/
    python scripts/make_starter_zh.py --audio-encoder A.onnx --vision-encoder V.onnx   # new starter encoders

Parameterised by the encoders it reuses: the starter's audio and vision networks (default: the shipped
``edge/assets/starter/audio.fp32.onnx`` and ``vision.fp32.onnx``, the files the starter-zh profile points at).  When
they are replaced (better encoders shipped in ``edge/assets/starter/``), re-run this script: the text encoder is kept
(``RUNS/text`` does not depend on them), the composite set, LFMIM and the package are made anew.

Stages, each skipped when its output exists (``--fresh`` redoes them all; an interrupted stage resumes):
1. ``text``: ``scripts/train_starter_zh_text.py`` (character BERT, MLM pre-training, fine-tuning on EmotionTalk's
   text labels; see its --help);
2. ``composite``: ``scripts/make_starter_composite.py --text-source emotiontalk`` (each EmotionTalk utterance's own
   transcript, a RAVDESS clip by its audio label, a FER2013 face by its vision label; valid held out by group);
3. ``lfmim``: ``edge-train --model starter-zh`` on it (the starter's recipe);
   warm-started from the starter's LFMIM (``--init``; all but the text input projection fit);
4. ``eval``: ``edge-eval`` on the composite test split (every head on its own label, and ``--against m``), RAVDESS
   actors 19-20 and the FER2013 public test;
5. ``package``: the text encoder (``text.fp32.onnx`` + ``tokenizer.json``), the LFMIM checkpoint and its FP32 ONNX
   export (``lfmim.fp32.onnx``: the profile is ``shipped``, so a first run prepares it without torch) into
   ``edge/assets/starter-zh/`` with ``assets.json`` (SHA-256, size, how each file was made, the figures), then an
   FP32 CPU build of the profile to check that it opens.
Every stage's log is kept in ``RUNS/logs/``.

``--text-from-assets`` skips stage 1: the shipped ``text.fp32.onnx`` and ``tokenizer.json`` are copied into
``RUNS/text`` and their figures and command are taken from the shipped ``assets.json`` (when ``RUNS/text`` is gone
and only the starter's encoders changed).

``--reship`` redoes only the ONNX export of the shipped checkpoint and its ``assets.json`` entry (after a change of
the exporter, or to add the file to an older package), from the files in ``edge/assets/starter-zh/`` alone.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ASSETS = ROOT / "edge" / "assets" / "starter-zh"
#: All shipped assets of every profile together stay within this.
BUDGET_BYTES = 60 * 2**20
LFMIM_RECIPE = ["--optimizer", "adamw", "--lr", "0.001", "--weight-decay", "0.05", "--schedule", "cosine",
                "--batch-size", "64"]


def rel(path: Path) -> str:
    """``path`` relative to the repository (assets.json and logs name no absolute path of this machine)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def stage(name: str, cmd: list[str], logs: Path) -> None:
    """Run one stage, its output into ``logs/<name>.log`` (and the terminal); a failure stops the chain."""
    logs.mkdir(parents=True, exist_ok=True)
    shown = " ".join(cmd).replace(sys.executable, "python")
    print(f"[{name}] {shown}", flush=True)
    started = time.perf_counter()
    with open(logs / f"{name}.log", "a", encoding="utf-8") as fh:
        fh.write(f"$ {shown}\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"[{name}] failed (exit {proc.returncode}); see {logs / (name + '.log')}")
    print(f"[{name}] done in {time.perf_counter() - started:.0f} s", flush=True)


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found; install the project: pip install -e '.[train,cpu,build]'")
    return found


def figures(runs: Path, shipped_text: dict | None = None) -> dict:
    """The measured figures of the text encoder and of LFMIM, for assets.json and the model card (``shipped_text``:
    the text encoder's figures as the shipped assets.json records them, when the text encoder is reused)."""
    if shipped_text is not None:
        out = {k: shipped_text[k] for k in ("text_encoder", "text_encoder_export")}
    else:
        text = json.loads((runs / "text" / "train.json").read_text())
        out = {"text_encoder": {k: text[k] for k in ("val", "val_no_punctuation", "majority_class", "selected",
                                                     "val_per_class_f1", "held_out_groups", "sizes", "encoder")},
               "text_encoder_export": {k: v for k, v in text["export"].items() if k != "fp32"}}
        out["text_encoder_export"]["parity_max_abs_diff"] = text["export"]["fp32"].get("max_abs_diff")
    for split in ("test", "ravdess_test", "fer_test", "test-against-m"):
        report = runs / "lfmim" / f"eval-{split}" / "report.json"
        if report.is_file():
            body = json.loads(report.read_text())
            out[f"lfmim_{split}"] = {head: r["overall"] for head, r in body.get("heads", body).items()
                                     if isinstance(r, dict) and "overall" in r}
    return out


def export_lfmim_onnx(work: Path, logs: Path) -> Path:
    """The shipped LFMIM checkpoint as FP32 ONNX: ``edge-build`` of the profile without its ``shipped`` key (which
    would read the very file being made), parity-checked against torch by the exporter."""
    profile = work / "starter-zh.toml"
    work.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "edge" / "profiles" / "starter-zh.toml").read_text(encoding="utf-8")
    profile.write_text(re.sub(r"(?m)^shipped\s*=.*$", "", text), encoding="utf-8")
    shutil.rmtree(work / "engines", ignore_errors=True)
    stage("export-lfmim", [tool("edge-build"), "--profile", str(profile), "--precision", "fp32", "--target", "cpu",
                           "--out-root", str(work / "engines"), "--no-progress"], logs)
    folder = work / "engines" / "starter-zh" / "cpu"
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return folder / manifest["networks"]["lfmim"]["fp32_onnx"]["file"]


EXPORT_CMD = "python scripts/make_starter_zh.py --reship (edge-build export of lfmim.safetensors)"


def reship(args) -> dict:
    """Re-export ``lfmim.fp32.onnx`` from the shipped checkpoint and update its entry in ``assets.json``."""
    from edge.fileio import sha256_file, write_bytes_atomic, write_text_atomic

    work = args.runs / "reship"
    onnx = export_lfmim_onnx(work, args.runs / "logs")
    write_bytes_atomic(ASSETS / "lfmim.fp32.onnx", onnx.read_bytes())
    body = json.loads((ASSETS / "assets.json").read_text(encoding="utf-8"))
    path = ASSETS / "lfmim.fp32.onnx"
    body["files"]["lfmim.fp32.onnx"] = {"sha256": sha256_file(path), "size_bytes": path.stat().st_size,
                                        "source": "lfmim.safetensors", "made_by": EXPORT_CMD}
    body["total_bytes"] = sum(f["size_bytes"] for f in body["files"].values())
    body["all_profiles_assets_bytes"] = _all_assets_bytes()
    if body["all_profiles_assets_bytes"] > BUDGET_BYTES:
        raise SystemExit(f"the shipped assets of all profiles take {body['all_profiles_assets_bytes'] / 2**20:.1f} MiB, "
                         "over the 60 MiB budget")
    write_text_atomic(ASSETS / "assets.json", json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    return body


def _all_assets_bytes() -> int:
    return sum(p.stat().st_size for p in ASSETS.parent.glob("*/*") if p.is_file() and p.suffix != ".py")


def reuse_shipped_text(folder: Path) -> tuple[dict, str]:
    """Put the shipped text encoder where the chain reads it (``RUNS/text``) and return its recorded figures and the
    command that made it, from the shipped assets.json (which packaging rewrites)."""
    record = ASSETS / "assets.json"
    if not record.is_file() or not (ASSETS / "text.fp32.onnx").is_file():
        raise SystemExit(f"--text-from-assets: {ASSETS} has no shipped text encoder; run without it to train one")
    body = json.loads(record.read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    for shipped, name in (("text.fp32.onnx", "text_encoder.onnx"), ("tokenizer.json", "tokenizer.json")):
        shutil.copyfile(ASSETS / shipped, folder / name)
    return body["figures"], body["commands"]["text"]


def package(args, runs: Path, text_cmd: str, composite_cmd: str, train_cmd: str,
            shipped_text: dict | None = None) -> dict:
    from edge.fileio import sha256_file
    from edge.fileio import write_text_atomic

    ASSETS.mkdir(parents=True, exist_ok=True)
    files = {"text.fp32.onnx": (runs / "text" / "text_encoder.onnx", text_cmd),
             "tokenizer.json": (runs / "text" / "tokenizer.json", text_cmd),
             "lfmim.safetensors": (runs / "lfmim" / "best.safetensors", train_cmd),
             "lfmim.json": (runs / "lfmim" / "best.json", train_cmd)}
    (ASSETS / "assets.json").unlink(missing_ok=True)
    for name, (src, _) in files.items():
        shutil.copyfile(src, ASSETS / name)
    (ASSETS / "lfmim.fp32.onnx").unlink(missing_ok=True)
    shutil.copyfile(export_lfmim_onnx(runs / "reship", runs / "logs"), ASSETS / "lfmim.fp32.onnx")
    files["lfmim.fp32.onnx"] = (ASSETS / "lfmim.safetensors", EXPORT_CMD)
    body = {"format": "lfmim-edge-assets/1", "profile": "starter-zh", "files": {},
            "reuses": {"audio": "asset:starter/audio.fp32.onnx", "vision": "asset:starter/vision.fp32.onnx",
                       "prequantized": "asset:starter"},
            "encoders_used_for_the_composite_set": {
                "audio": {"file": rel(args.audio_encoder), "sha256": sha256_file(args.audio_encoder)},
                "vision": {"file": rel(args.vision_encoder), "sha256": sha256_file(args.vision_encoder)}},
            "commands": {"text": text_cmd, "composite": composite_cmd, "lfmim": train_cmd,
                         "package": "python scripts/make_starter_zh.py " + " ".join(args.argv)},
            "figures": figures(runs, shipped_text)}
    for name, (src, cmd) in files.items():
        path = ASSETS / name
        body["files"][name] = {"sha256": sha256_file(path), "size_bytes": path.stat().st_size, "source": rel(src),
                               "made_by": cmd}
    body["total_bytes"] = sum(f["size_bytes"] for f in body["files"].values())
    everything = _all_assets_bytes()
    body["all_profiles_assets_bytes"] = everything
    if everything > BUDGET_BYTES:
        raise SystemExit(f"the shipped assets of all profiles take {everything / 2**20:.1f} MiB, over the 60 MiB budget")
    write_text_atomic(ASSETS / "assets.json", json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    return body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "starter-zh")
    p.add_argument("--audio-encoder", type=Path, default=ROOT / "edge" / "assets" / "starter" / "audio.fp32.onnx")
    p.add_argument("--vision-encoder", type=Path, default=ROOT / "edge" / "assets" / "starter" / "vision.fp32.onnx")
    p.add_argument("--draws", type=int, default=1, help="composite samples per EmotionTalk train row")
    p.add_argument("--epochs", type=int, default=1, help="LFMIM epochs (warm-started: one was what a busy 2-core CPU allowed)")
    p.add_argument("--init", default="asset:starter/lfmim.safetensors",
                   help="LFMIM warm start (edge-train --init): the starter's LFMIM, whose audio, vision and fusion "
                        "layers read the same encoders' features; 'none' trains from random weights")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fresh", action="store_true", help="redo every stage (the text encoder too)")
    p.add_argument("--text-from-assets", action="store_true",
                   help="reuse the shipped text encoder (text.fp32.onnx, tokenizer.json and its recorded figures) "
                        "instead of training one: for new starter audio or vision encoders")
    p.add_argument("--no-package", action="store_true", help="stop after the evaluation")
    p.add_argument("--reship", action="store_true",
                   help="only re-export the shipped checkpoint to lfmim.fp32.onnx and update assets.json")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.reship:
        body = reship(args)
        print(json.dumps({"lfmim.fp32.onnx": body["files"]["lfmim.fp32.onnx"],
                          "all_profiles_assets_mib": round(body["all_profiles_assets_bytes"] / 2**20, 2)}, indent=2))
        return 0
    runs, logs = args.runs, args.runs / "logs"
    py = sys.executable
    if args.fresh and runs.exists():
        for sub in ("composite", "lfmim"):
            shutil.rmtree(runs / sub, ignore_errors=True)
    # 1. text encoder
    text_args = ["--data", str(args.data / "emotiontalk" / "emotiontalk.csv"), "--out", str(runs / "text"),
                 "--threads", str(args.threads), "--no-progress"]
    text_cmd = "python scripts/train_starter_zh_text.py"
    shipped_text = None
    if args.text_from_assets:
        shipped_text, text_cmd = reuse_shipped_text(runs / "text")
    elif args.fresh or not (runs / "text" / "train.json").is_file():
        resume = [] if args.fresh else ["--resume"]
        stage("text", [py, "scripts/train_starter_zh_text.py", *text_args, *resume], logs)
    # 2. composite set
    composite_args = ["--text-source", "emotiontalk", "--text-encoder", str(runs / "text" / "text_encoder.onnx"),
                      "--text-tokens", "64", "--audio-encoder", str(args.audio_encoder),
                      "--vision-encoder", str(args.vision_encoder), "--draws", str(args.draws),
                      "--data", str(args.data), "--out", str(runs / "composite"), "--threads", str(args.threads),
                      "--no-progress"]
    composite_cmd = ("python scripts/make_starter_composite.py --text-source emotiontalk --text-encoder "
                     f"runs/starter-zh/text/text_encoder.onnx --text-tokens 64 --draws {args.draws}")
    if not (runs / "composite" / "composite.json").is_file():
        shutil.rmtree(runs / "composite", ignore_errors=True)  # an interrupted store is rewritten (pools are cached)
        stage("composite", [py, "scripts/make_starter_composite.py", *composite_args], logs)
    # 3. LFMIM
    init = [] if args.init == "none" else ["--init", args.init]
    train_args = ["--store", str(runs / "composite"), "--out", str(runs / "lfmim"), "--model", "starter-zh",
                  *LFMIM_RECIPE, "--epochs", str(args.epochs), *init, "--threads", str(args.threads), "--no-progress"]
    train_cmd = ("edge-train --store runs/starter-zh/composite --out runs/starter-zh/lfmim --model starter-zh "
                 + " ".join([*LFMIM_RECIPE, "--epochs", str(args.epochs), *init]))
    history = runs / "lfmim" / "history.jsonl"
    done = history.is_file() and len(history.read_text().splitlines()) >= args.epochs
    if not done:
        resume = ["--resume"] if (runs / "lfmim" / "last.safetensors").is_file() else []
        stage("lfmim", [tool("edge-train"), *train_args, *resume], logs)
    # 4. evaluation
    ckpt = str(runs / "lfmim" / "best.safetensors")
    for split, extra in (("test", []), ("ravdess_test", []), ("fer_test", []), ("test-against-m", ["--against", "m"])):
        out = runs / "lfmim" / f"eval-{split}"
        if not (out / "report.json").is_file():
            stage(f"eval-{split}", [tool("edge-eval"), "--checkpoint", ckpt, "--store", str(runs / "composite"),
                                    "--split", split.split("-")[0], "--out", str(out), "--no-progress", *extra], logs)
    if args.no_package:
        print(json.dumps(figures(runs, shipped_text), indent=2))
        return 0
    # 5. package, then check that the profile builds and opens
    body = package(args, runs, text_cmd, composite_cmd, train_cmd, shipped_text)
    stage("build-fp32", [tool("edge-build"), "--profile", "starter-zh", "--precision", "fp32", "--target", "cpu",
                         "--out-root", str(runs / "engines"), "--no-progress"], logs)
    print(json.dumps({"files": {k: v["size_bytes"] for k, v in body["files"].items()},
                      "all_profiles_assets_mib": round(body["all_profiles_assets_bytes"] / 2**20, 2),
                      "figures": body["figures"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
