"""``edge-bench asr``: the speech sets, system parsing, and a short real run (pocketsphinx and, where installed,
Whisper) through the command line: JSON and markdown written, the naive baseline in the same run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edge.asr.scoring import cer, chinese_number, normalize_chinese, normalize_english, wer
from edge.bench.asr import parse_system, segments
from edge.bench.asr_data import RAVDESS_STATEMENTS, load_set
from edge.cli import bench as bench_cli
from edge.errors import InputError


# ------------------------------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("text, words", [
    ("From August 18th, of their divorce.", "from august eighteenth of their divorce"),
    ("Mr. Smith has 1,200 dogs", "mister smith has one thousand two hundred dogs"),
    ("In 1984, 50% were well-known.", "in nineteen eighty four fifty percent were well known"),
    ("It's me piglet, help help!", "it's me piglet help help"),
    ("3.5 km on the 21st", "three point five km on the twenty first"),
])
def test_english_normalisation(text, words):
    assert normalize_english(text) == words.split()


def test_chinese_numbers_and_normalisation():
    assert [chinese_number(n) for n in (0, 10, 12, 29, 105, 1010, 20000)] == \
        ["零", "十", "十二", "二十九", "一百零五", "一千零一十", "二万"]
    pytest.importorskip("opencc", reason="opencc is not installed (pip install opencc): Mandarin scoring needs it")
    assert "".join(normalize_chinese("設定29度，50%在2012年。")) == "设定二十九度百分之五十在二零一二年"
    assert cer("设定二十九度", "設定29度。") == 0.0
    assert cer("设定二十九度", "设定三十度") == pytest.approx(2 / 6)


def test_rates_count_edits_over_the_reference():
    assert wer("kids are talking by the door", "Kids are talking by the door!") == 0.0
    assert wer("kids are talking by the door", "kids talking by a door") == pytest.approx(2 / 6)
    with pytest.raises(InputError, match="at least one word"):
        wer("...", "x")
    with pytest.raises(InputError, match="knows English .* and Mandarin"):
        from edge.asr.scoring import edit_counts

        edit_counts("a", "b", language="de")


# ------------------------------------------------------------------------------------------------- systems, sets


def test_systems_are_parsed():
    assert parse_system("pocketsphinx") == {"label": "pocketsphinx", "backend": "pocketsphinx", "model": "",
                                            "options": {}}
    s = parse_system("whisper:small@window_s=10;language=set;prompt=")
    assert s["model"] == "small" and s["options"] == {"window_s": 10, "language": "set", "prompt": ""}
    with pytest.raises(InputError, match="pocketsphinx, whisper or whisper-onnx"):
        parse_system("vosk")
    with pytest.raises(InputError, match="is not key=value"):
        parse_system("whisper@beam")


@pytest.mark.data
def test_ravdess_order_spreads_actors_and_statements(shared_data):
    items = load_set("ravdess", root=shared_data, limit=40)
    actors = {u.path.parent.name for u in items}
    assert len(actors) == len({p.name for p in (shared_data / "ravdess-speech").glob("Actor_*")})
    assert {u.text for u in items} == set(RAVDESS_STATEMENTS.values())
    val, test = load_set("ravdess", root=shared_data, split="val"), load_set("ravdess", root=shared_data, split="test")
    assert not {u.id for u in val} & {u.id for u in test} and len(val) + len(test) == 1200


@pytest.mark.data
def test_esd_gives_each_sentence_once(shared_data):
    items = load_set("esd", root=shared_data)
    assert len(items) == len({u.text for u in items}) == 200
    assert len({u.path.parent.name for u in items}) == 5, "the emotions rotate"


def test_vad_segments_a_real_utterance(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    pytest.importorskip("onnxruntime")
    from edge.media import read_audio
    from edge.stream.vad import SileroVADModel
    from edge.testmedia import synth_speech

    x, _ = read_audio(synth_speech("what time is it now", tmp_path / "s.wav", voice="en-us+f2"))
    x = np.concatenate([np.zeros(8000, np.float32), x])
    found = segments(x, SileroVADModel(threads=1))
    assert len(found) == 1
    end, delay, audio = found[0]
    assert 0.5 < end <= x.size / 16000 + 0.1 and 0 < delay < 1.0 and audio.size > 8000


# ------------------------------------------------------------------------------------------------- a real run


@pytest.mark.slow
def test_the_command_writes_json_and_markdown_with_the_baseline(tmp_path, capsys):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (pip install pocketsphinx)")
    systems = ["pocketsphinx"]
    from edge.asr.registry import faster_whisper_installed
    from edge.asr.whisper_models import installed_packaged

    if faster_whisper_installed() and installed_packaged():
        systems.append("whisper@window_s=10;language=set")
    out, md = tmp_path / "asr.json", tmp_path / "asr.md"
    rc = bench_cli.main(["asr", "--systems", ",".join(systems), "--sets", "espeak", "--limit", "2", "--json", str(out),
                         "--markdown", str(md), "--no-progress", "-q", "--threads", "1"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert [r["system"] for r in result["rows"]] == systems and not result["failures"]
    for row in result["rows"]:
        assert row["utterances"] == 2 and row["metric"] == "wer" and 0 <= row["rate"] <= 2
        assert row["compute_s"]["p50"] > 0 and row["latency_s"]["p95"] >= row["compute_s"]["p50"]
    assert len(result["utterances"]) == 2 * len(systems)
    table = md.read_text()
    assert table.startswith("CPU: ") and "| pocketsphinx | espeak | 2 | WER" in table
    assert "| pocketsphinx | espeak |" in capsys.readouterr().out
