"""``edge-bench pipeline`` on a real tiny build (the paper's architectures at small widths, random weights) and a real
CREMA-D clip, through the real live loop.

Invariants only (a row per configuration, RTF = the sum of the stage figures, ordered percentiles, estimates made,
JSON and markdown written and parseable, failures recorded, clear one-line errors); no timing is asserted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.bench.pipeline import STAGES, bench_pipeline, to_markdown
from edge.cli.bench import main
from edge.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "fixtures" / "tiny.toml")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")]
pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (pip install pocketsphinx)")


@pytest.fixture(scope="module")
def build_dir(tiny_build) -> Path:
    return tiny_build


@pytest.fixture(scope="module")
def clip(shared_data) -> Path:
    return shared_data / "crema-d-samples" / "1001_DFA_HAP_XX.mp4"


@pytest.fixture(scope="module")
def result(build_dir, clip) -> dict:
    """Max speed, detect_every 1 (naive) and 2, the clip looped twice."""
    return bench_pipeline(clip, [("tiny", build_dir, TINY)], speeds=("max",), detect_every=(1, 2), loop=2, threads=1)


def _table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.split("\n\n")[1].splitlines() if line.startswith("|")]


def test_a_row_per_configuration(result):
    assert [(r["build"], r["speed"], r["detect_every"]) for r in result["rows"]] == [("tiny", "max", 1),
                                                                                     ("tiny", "max", 2)]
    assert result["failures"] == [] and all(r["status"] == "ok" for r in result["rows"])
    assert result["builds"][0]["profile"] == "tiny" and result["builds"][0]["precision"] == "fp32"


def test_rtf_is_the_sum_of_the_stages(result):
    for r in result["rows"]:
        assert set(r["stages"]) == set(STAGES)
        assert all(v >= 0 for v in r["stages"].values())
        assert r["rtf"] == pytest.approx(sum(r["stages"].values()), abs=1e-3)
        assert r["rtf"] > 0


def test_runs_made_estimates_and_found_faces(result, clip):
    from edge.media import probe

    assert result["settings"]["media_duration_s"] == pytest.approx(2 * probe(clip)["duration"], abs=0.2)
    for r in result["rows"]:
        assert r["estimates"] > 0 and r["media_s"] > 0
        assert 0 < r["frames_with_face"] <= r["frames"]
        assert r["tick_ms"]["p50"] <= r["tick_ms"]["p95"]
        assert r["end_to_end_ms"] == {"p50": None, "p95": None, "p99": None}, "max speed has no capture clock"
        assert r["dropped_frames"] == 0 and r["audio_overflow_s"] == 0
        assert 0 < r["cpu_fraction"] and r["peak_rss_mb"] >= 0 and r["cores"] >= 1
        assert r["speech_segments"] >= 1


def test_naive_and_optimised_are_compared(result):
    (c,) = result["comparisons"]
    assert (c["build"], c["speed"], c["naive_detect_every"], c["detect_every"]) == ("tiny", "max", 1, 2)
    naive, opt = result["rows"]
    assert c["naive_rtf"] == naive["rtf"] and c["rtf"] == opt["rtf"]
    assert c["rtf_ratio"] == pytest.approx(naive["rtf"] / opt["rtf"], abs=1e-3)


def test_markdown_has_a_header_and_a_line_per_run(result):
    text = to_markdown(result)
    rows = _table_rows(text)
    assert rows[0].startswith("| build | ASR | speed | detect_every | RTF | e2e p50/p95/p99 ms | vision / audio enc / VAD")
    assert set(rows[1]) <= set("|-: ") and len(rows) == 2 + len(result["rows"])
    assert "| tiny | pocketsphinx | max | 2 |" in text and "RTF naive -> opt" in text
    json.dumps(result)


def test_cli_realtime_writes_json_and_markdown_and_records_a_broken_build(build_dir, clip, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(build_dir, broken)
    with open(broken / "lfmim.fp32.onnx", "ab") as fh:
        fh.write(b"\0")  # changed since the build: the build does not open, the good one still runs
    out_json, out_md = tmp_path / "p.json", tmp_path / "p.md"
    code = main(["pipeline", "--clip", str(clip), "--engines", f"tiny={build_dir}", "--engines", f"bad={broken}",
                 "--profile", TINY, "--speeds", "realtime", "--detect-every", "1", "--asr", "none", "--threads", "1",
                 "--json", str(out_json), "--markdown", str(out_md), "--no-progress", "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads(out_json.read_text())
    (row,) = data["rows"]
    assert (row["build"], row["speed"], row["status"]) == ("tiny", "realtime", "ok")
    e2e = row["end_to_end_ms"]
    assert 0 <= e2e["p50"] <= e2e["p95"] <= e2e["p99"]
    assert row["estimates"] > 0 and row["rtf"] == pytest.approx(sum(row["stages"].values()), abs=1e-3)
    assert [f["build"] for f in data["failures"]] == ["bad"]
    assert "changed since the build" in data["failures"][0]["error"]
    md = out_md.read_text()
    assert "| tiny | none | realtime | 1 |" in md and "| bad | - |" in md and "FAILED" in md
    assert "| tiny | none | realtime | 1 |" in printed and json.loads(printed.strip().splitlines()[-1])["failed"] == 1


@pytest.mark.parametrize("what", ["clip", "build"])
def test_cli_missing_input_is_one_line_and_exit_2(what, build_dir, clip, tmp_path, capsys):
    args = {"clip": [str(tmp_path / "none.mp4"), str(build_dir)], "build": [str(clip), str(tmp_path / "nobuild")]}[what]
    code = main(["pipeline", "--clip", args[0], "--engines", args[1], "--json", str(tmp_path / "p.json"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("edge-bench: error:")
    assert ("no such file" if what == "clip" else "no build in") in err[0]
    assert not (tmp_path / "p.json").exists()


def test_bad_arguments_are_clear_errors(build_dir, clip):
    with pytest.raises(InputError, match="speeds must be chosen from realtime, max"):
        bench_pipeline(clip, [("t", build_dir, TINY)], speeds=("fast",))
    with pytest.raises(InputError, match="detect_every values must be positive"):
        bench_pipeline(clip, [("t", build_dir, TINY)], detect_every=(0,))
    with pytest.raises(InputError, match="--loop must be at least 1"):
        bench_pipeline(clip, [("t", build_dir, TINY)], loop=0)
    with pytest.raises(InputError, match="no build given"):
        bench_pipeline(clip, [])


def test_script_takes_the_same_flags():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_pipeline.py"), "--help"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0
    for flag in ("--clip", "--loop", "--profile", "--target", "--engines", "--speeds", "--detect-every", "--asr",
                 "--threads", "--json", "--markdown", "--no-progress", "--fp32"):
        assert flag in done.stdout
