"""CREMA-D's perception-study votes as per-modality label tuples, and the paper's section 3.2 table on them."""

from __future__ import annotations

import json

import pytest

from edge.cli import eval as eval_cli
from edge.errors import DataError
from edge.labels import INDEX
from edge.train.crema_votes import actor_split, is_crema_votes, read_crema_votes, votes_label_table

HEADER = '"","FileName","VoiceVote","VoiceLevel","FaceVote","FaceLevel","MultiModalVote","MultiModalLevel"\n'


def _write(tmp_path, *lines):
    path = tmp_path / "summaryTable.csv"
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    return path


def test_votes_are_read_with_split_codes_ordered_by_agreement(tmp_path):
    path = _write(tmp_path, '"1","1001_IEO_SAD_HI","N","60.14","A:F","30.67:51.00","N","63.5"\n',
                  '"2","1015_DFA_ANG_XX","A","47.33","A","41.8","A","41.5"\n')
    assert is_crema_votes(path)
    a, b = read_crema_votes(path)
    assert a.actor == 1001 and a.acted == INDEX["sadness"] and a.intensity == "HI" and a.tied
    assert a.face == (INDEX["fear"], INDEX["anger"]) and a.levels[1] == (51.0, 30.67)
    assert not b.tied and actor_split(b.actor) == "valid" and actor_split(1050) == "train"
    table = votes_label_table(path)
    assert table.ids == ["1015_DFA_ANG_XX"] and table.labels.tolist() == [[INDEX["neutral"]] + [INDEX["anger"]] * 3]
    top = votes_label_table(path, ties="top")
    assert top.labels[0].tolist() == [INDEX["neutral"], INDEX["neutral"], INDEX["fear"], INDEX["neutral"]]


def test_malformed_votes_are_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="not one or more of the codes"):
        read_crema_votes(_write(tmp_path, '"1","1001_IEO_SAD_HI","Q","60","N","60","N","60"\n'))
    with pytest.raises(DataError, match="has 2 code"):
        read_crema_votes(_write(tmp_path, '"1","1001_IEO_SAD_HI","N:S","60:20:1","N","60","N","60"\n'))
    with pytest.raises(DataError, match="ACTOR_SENTENCE_EMOTION_LEVEL"):
        read_crema_votes(_write(tmp_path, '"1","jacket","N","60","N","60","N","60"\n'))
    with pytest.raises(DataError, match="not found"):
        read_crema_votes(tmp_path / "missing.csv")


def test_inconsistency_on_the_real_votes(shared_data, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the report's figures need matplotlib (pip install 'lfmim-edge[train]')")
    out = tmp_path / "incon"
    table = shared_data / "crema-d-votes" / "summaryTable.csv"
    assert eval_cli.main(["--inconsistency", "--labels", str(table), "--out", str(out), "-q"]) == 0
    stats = json.loads((out / "inconsistency.json").read_text())
    assert stats["n"] == sum(not r.tied for r in read_crema_votes(table))
    # faces and the multimodal vote agree far more often than voices do (the study's own finding)
    assert stats["pairs"]["v-m"] < stats["pairs"]["a-m"] < stats["pairs"]["a-v"]
    assert stats["distribution"]["t"]["neutral"] == stats["n"]  # every CREMA-D sentence is neutral
    assert (out / "figure1b_pair_inconsistency.png").is_file()
    assert "Incon(u1, u2)" in capsys.readouterr().out
