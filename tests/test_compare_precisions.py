"""scripts/compare_precisions.py: each head through a real starter build's run path on real test data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "scripts"))

pytestmark = pytest.mark.skipif(not (DATA / "fer2013" / "publictest.npz").is_file(),
                                reason="needs ../shared/data (FER2013, RAVDESS, GoEmotions-Ekman)")


def test_every_head_is_measured_through_the_build_and_compared(starter_build, tmp_path, capsys):
    import compare_precisions

    out = tmp_path / "p.json"
    assert compare_precisions.main([str(starter_build), str(starter_build), "--limit", "42", "--threads", "1",
                                    "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert len(results) == 2
    for head in ("v", "a", "t"):
        first, second = (r["heads"][head] for r in results)
        assert first["n"] == 42 and 0.0 <= first["ece"] <= 1.0
        # the same build twice gives the same figures: the measurement is deterministic
        assert first["accuracy"] == second["accuracy"] and first["ece"] == pytest.approx(second["ece"])
    # well above chance (1/7) on real faces and sentences: the run path really recognises them
    assert results[0]["heads"]["v"]["accuracy"] > 0.35 and results[0]["heads"]["t"]["accuracy"] > 0.35
    table = capsys.readouterr().out
    assert "FER2013 public test" in table and "+0.00 pt" in table


def test_a_data_folder_without_the_test_sets_is_one_clear_error(tmp_path):
    import compare_precisions

    with pytest.raises(SystemExit, match="fer2013/publictest.npz is missing"):
        compare_precisions.main(["engines/starter/cpu", "--data", str(tmp_path)])
