"""Failures are never silent: an ASR that raises, an encoder runner that raises, a camera that dies.  Each is
reported at once (one log line), recorded (``Recognizer.errors`` / ``failures``, ``on_error``, a JSON Lines ``error``
record), makes its modality unavailable with the reason in the estimates, is restarted as the policy says, and makes
``edge-run`` exit non-zero at the end.  Real threads, queues, ONNX Runtime sessions and decoded media throughout;
only the failing part is made to fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.stream.asr import SpeechRecognizer, Transcript
from edge.stream.config import OptionsError, RunConfig
from edge.stream.recognizer import Recognizer

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "fixtures" / "tiny.toml")

pytestmark = pytest.mark.slow


class CrashingASR(SpeechRecognizer):
    """A recognizer whose model crashes on every utterance (what a corrupt model file or a driver bug does)."""

    name = "crashing"

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, samples16k) -> Transcript:
        self.calls += 1
        raise RuntimeError(f"model crashed on utterance {self.calls}")


def _run(config: RunConfig, **kwargs) -> tuple[Recognizer, list, list]:
    rec = Recognizer(config, **kwargs)
    failures, estimates = [], []
    rec.on_error(failures.append)
    rec.on_estimate(estimates.append)
    with rec:
        assert rec.wait(300), "the run must end"
    return rec, estimates, failures


def test_an_asr_that_raises_is_reported_once_and_text_becomes_unavailable(tiny_build, demo_clip, caplog):
    config = RunConfig(profile=TINY, engines=str(tiny_build), video=str(demo_clip), speed="max", partial_s=0)
    with caplog.at_level("ERROR", logger="edge"):
        rec, estimates, failures = _run(config, asr=CrashingASR())
    assert [f.part for f in failures] == ["asr"] and failures[0].final
    assert rec.errors == ["asr failed: RuntimeError: model crashed on utterance 1"]
    lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert lines == ["asr failed: RuntimeError: model crashed on utterance 1; no restart left"]
    summary = rec.summary()
    assert summary["down"] == ["asr"] and summary["errors"] == rec.errors and summary["restarts"] == {}
    after = [e for e in estimates if e.reasons]
    assert after, "estimates after the failure say why text is missing"
    for e in after:
        assert e.available["text"] is False and e.probs["text"] is None
        assert e.reasons["text"].startswith("asr failed: RuntimeError")
    assert any(e.available["vision"] for e in after) and any(e.available["audio"] for e in after)
    assert after[-1].to_dict()["failed"] == {"text": "asr failed: RuntimeError: model crashed on utterance 1"}


def test_a_failed_stage_is_restarted_with_backoff_as_often_as_the_policy_says(tiny_build, demo_clip):
    asr = CrashingASR()
    config = RunConfig(profile=TINY, engines=str(tiny_build), video=str(demo_clip), speed="max", partial_s=0,
                       restart=2)
    rec, _, failures = _run(config, asr=asr)
    assert [f.final for f in failures] == [False, False, True]
    assert [f.restarts for f in failures] == [0, 1, 2]
    assert rec.summary()["restarts"] == {"asr": 2} and rec.asr.restarts == 2
    assert asr.calls == 3  # after the last restart the stage is down: later utterances are drained, not transcribed
    assert rec.asr.lost >= 1


def _failing_text_encoder(build: Path, out: Path) -> Path:
    """A copy of ``build`` whose text encoder has the right inputs and outputs but fails at run time (a Reshape to
    an impossible shape), with the manifest's hashes updated: a runner that raises, as a damaged model does."""
    import onnx
    from onnx import TensorProto, helper

    from edge.fileio import sha256_file

    shutil.copytree(build, out)
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["networks"]["text"]
    tokens, dim = entry["inputs"]["input_ids"][1], entry["outputs"]["hidden"][2]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", tokens])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    cast = helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT)
    shape = helper.make_tensor("bad_shape", TensorProto.INT64, [3], [-1, tokens + 1, dim])
    reshape = helper.make_node("Reshape", ["ids_f", "bad_shape"], ["hidden"])
    graph = helper.make_graph([cast, reshape], "broken", inputs,
                              [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", tokens, dim])],
                              initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = out / entry["onnx"]["file"]
    onnx.save(model, str(path))
    for key in ("onnx", "fp32_onnx", "variant_onnx"):
        if entry.get(key) and entry[key]["file"] == path.name:
            entry[key]["sha256"], entry[key]["size_bytes"] = sha256_file(path), path.stat().st_size
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_a_runner_that_raises_is_an_error_record_and_a_nonzero_exit(tiny_build, demo_clip, tmp_path, capsys):
    from edge.cli import run as run_cli

    broken = _failing_text_encoder(tiny_build, tmp_path / "broken")
    out = tmp_path / "out.jsonl"
    rc = run_cli.main(["--profile", TINY, "--engines", str(broken), "--video", str(demo_clip), "--speed", "max",
                       "--jsonl", str(out), "--no-view", "-q"])
    assert rc == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    errors = [r for r in records if r.get("type") == "error"]
    assert errors and errors[0]["part"] == "text_encoder" and errors[0]["final"] is True
    assert "text" in errors[0]["unavailable"]
    estimates = [r for r in records if r.get("type") != "error"]
    assert estimates and all(not r["available"]["text"] for r in estimates)
    assert any(r["available"]["vision"] for r in estimates)
    assert "edge-run: text_encoder failed:" in capsys.readouterr().err


def test_a_camera_that_dies_is_reported_and_vision_becomes_unavailable(tiny_build, demo_clip):
    cv2 = pytest.importorskip("cv2")
    from edge.stream.sources import CameraSource

    opened = []

    def opener(spec):  # a real capture of real frames the first time; then the device is gone
        if opened:
            return None
        opened.append(cv2.VideoCapture(str(demo_clip)))
        return opened[0]

    def sources(rec):
        rec.audio_q.close()  # this rig has no microphone: audio (and so text) has no evidence, vision does
        return [CameraSource(0, clock=rec.clock, queue=rec.video_q, fps=None, retry=(0.01, 0.02), max_failures=2,
                             opener=opener, on_error=rec._source_error)]

    config = RunConfig(profile=TINY, engines=str(tiny_build), rate=10.0, asr="none", max_seconds=30)
    rec, estimates, failures = _run(config, sources=sources)
    assert [f.part for f in failures] == ["camera"] and "stopped delivering frames" in failures[0].error
    assert any(e.available["vision"] for e in estimates), "frames came before the camera died"
    last = estimates[-1]
    assert last.available["vision"] is False and last.reasons["vision"].startswith("camera failed: InputError")
    assert rec.summary()["errors"] and rec.summary()["down"] == ["camera"]


def test_every_option_is_checked_at_once_before_anything_starts():
    with pytest.raises(OptionsError) as caught:
        RunConfig(smoothing="bogus", alpha=0.0, vad_threshold=1.5, asr="whisper-onnx", restart=-1, detect_every=0)
    mistakes = caught.value.mistakes
    assert len(mistakes) == 6
    for word in ("--smoothing 'bogus'", "--alpha", "--vad-threshold", "--asr whisper-onnx needs --asr-model",
                 "--restart", "--detect-every"):
        assert any(word in m for m in mistakes), (word, mistakes)


def test_edge_run_prints_one_line_per_mistake_and_loads_nothing(capsys):
    from edge.cli import run as run_cli

    assert run_cli.main(["--smoothing", "bogus", "--asr", "whisper-onnx", "--profile", "no-such-profile"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edge-run: error: --smoothing 'bogus': expected one of ema, mean, none",
                   "edge-run: error: --asr whisper-onnx needs --asr-model DIR (a Whisper export: "
                   "edge-export-whisper MODEL DIR)"]


def test_failure_records_are_json_ready():
    from edge.stream.failures import FailureReporter, RestartPolicy

    seen = []
    reporter = FailureReporter(RestartPolicy(1), notify=seen.append)
    assert reporter.report("asr", RuntimeError("boom"), media_time=1.5) is True  # one restart allowed
    assert reporter.reasons() == {"text": "asr failed: RuntimeError: boom"}
    reporter.recovered("asr")
    assert reporter.reasons() == {}
    assert reporter.report("asr", ValueError("again")) is False
    reporter.recovered("asr")  # a final failure is never cleared
    assert reporter.reasons() == {"text": "asr failed: ValueError: again"} and reporter.is_down("asr")
    record = json.loads(json.dumps(seen[-1].to_dict()))
    assert record == {"type": "error", "part": "asr", "error": "ValueError: again", "media_time": None,
                      "restarts": 1, "final": True, "unavailable": ["text"]}
    assert np.isclose(RestartPolicy().backoff(0), 0.25) and RestartPolicy().backoff(10) == 5.0
