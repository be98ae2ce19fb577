"""``edge-bench models`` on a real tiny build (the paper's architectures at small widths, random weights).

Invariants only (ordered latencies, throughput = batch / latency, a baseline and a speedup per row, every
network x variant x batch present, failures recorded without stopping the others); no timing is asserted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from edge.bench.feeds import fixed_batch, make_feeds, pnet_size  # noqa: E402
from edge.bench.models import NETWORKS, bench_models, summarize, to_markdown  # noqa: E402
from edge.fileio import sha256_file  # noqa: E402
from edge.cli.bench import main  # noqa: E402
from edge.errors import InputError  # noqa: E402
from edge.runtime.base import TensorSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny.toml"
QUICK = {"batches": (1, 2), "repeats": 2, "warmup": 1, "threads": 1}


@pytest.fixture(scope="module")
def build_dir(tiny_build) -> Path:
    return tiny_build


@pytest.fixture(scope="module")
def result(build_dir) -> dict:
    return bench_models(build_dir, **QUICK)


def _copy(build_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "tiny" / "cpu"
    shutil.copytree(build_dir, copy)
    return copy


def _set_file(copy: Path, network: str, path: Path) -> None:
    """Record ``path``'s new hash in the copy's manifest (as if the build had written it)."""
    manifest = json.loads((copy / "manifest.json").read_text())
    for key in ("onnx", "fp32_onnx"):
        manifest["networks"][network][key]["sha256"] = sha256_file(path)
    (copy / "manifest.json").write_text(json.dumps(manifest))


# -------------------------------------------------------------------------------------------------- result rows


def test_a_row_per_network_variant_and_batch(result):
    keys = {(r["network"], r["backend"], r["device"], r["precision"], r["batch"]) for r in result["rows"]}
    want = {(n, b, "cpu", "fp32", batch) for n in NETWORKS for b in ("torch", "onnxruntime") for batch in (1, 2)}
    assert keys == want
    assert len(result["rows"]) == len(want)
    assert result["failures"] == []
    assert all(r["status"] == "ok" for r in result["rows"])


def test_latencies_are_positive_and_ordered(result):
    for r in result["rows"]:
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p95_ms"], r
        assert r["min_ms"] <= r["mean_ms"] <= max(r["p95_ms"], r["mean_ms"]), r


def test_throughput_is_batch_over_mean_latency(result):
    for r in result["rows"]:
        assert r["items_per_s"] == pytest.approx(r["batch"] * 1e3 / r["mean_ms"], rel=1e-6)


def test_baseline_and_speedup_for_every_row(result):
    base = {(r["network"], r["batch"]): r["p50_ms"] for r in result["rows"] if r["baseline"]}
    assert len(base) == len(NETWORKS) * 2
    for r in result["rows"]:
        assert r["speedup_vs"] == "torch-cpu fp32"
        assert r["speedup_vs_torch_fp32"] == pytest.approx(base[(r["network"], r["batch"])] / r["p50_ms"], rel=1e-2)
        if r["baseline"]:
            assert r["speedup_vs_torch_fp32"] == 1.0


def test_inputs_memory_machine_and_settings_are_recorded(result):
    rows = {(r["network"], r["backend"], r["batch"]): r for r in result["rows"]}
    assert rows[("pnet", "onnxruntime", 2)]["input_shapes"] == {"image": [2, 3, 108, 144]}
    assert rows[("text", "torch", 1)]["input_shapes"]["input_ids"] == [1, 16]
    assert all(r["peak_rss_mb"] >= 0 and r["device_peak_mb"] is None for r in result["rows"])
    assert result["machine"]["cores"] >= 1 and result["machine"]["cpu"]
    assert result["machine"]["packages"]["onnxruntime"]
    assert result["settings"]["threads"] == 1 and result["settings"]["batches"] == [1, 2]
    assert result["builds"][0]["profile"] == "tiny" and result["builds"][0]["random_weights"] is True
    json.dumps(result)  # JSON-ready


def test_markdown_has_a_header_and_a_line_per_row(result):
    lines = [line for line in to_markdown(result).splitlines() if line.startswith("|")]
    assert lines[0].startswith("| network | backend | precision | batch | p50 ms | p95 ms | items/s | speedup")
    assert set(lines[1]) <= set("|-: ")
    assert len(lines) == 2 + len(result["rows"])
    assert "| resnet18 | onnxruntime-cpu | fp32 | 2 |" in "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- failures


def test_a_corrupted_network_is_recorded_and_the_others_measured(build_dir, tmp_path):
    copy = _copy(build_dir, tmp_path)
    bad = copy / "resnet18.fp32.onnx"
    bad.write_bytes(b"not an onnx file" * 64)
    _set_file(copy, "resnet18", bad)  # a file the manifest agrees with: ONNX Runtime itself must refuse it
    res = bench_models(copy, networks=("rnet", "resnet18"), batches=(1,), repeats=2, warmup=0, threads=1)
    failed = {(r["network"], r["backend"]) for r in res["rows"] if r["status"] == "failed"}
    assert failed == {("resnet18", "torch"), ("resnet18", "onnxruntime")}
    assert {f["network"] for f in res["failures"]} == {"resnet18"}
    assert any("ONNX Runtime cannot load" in r["note"] for r in res["rows"] if r["network"] == "resnet18")
    assert [r["status"] for r in res["rows"] if r["network"] == "rnet"] == ["ok", "ok"]
    assert "FAILED" in to_markdown(res)


def test_a_file_changed_since_the_build_is_recorded(build_dir, tmp_path):
    copy = _copy(build_dir, tmp_path)
    with open(copy / "lfmim.fp32.onnx", "ab") as fh:
        fh.write(b"\0")
    res = bench_models(copy, networks=("lfmim",), batches=(1,), repeats=1, warmup=0, threads=1, baseline=False)
    (row,) = res["rows"]
    assert row["status"] == "failed" and "changed since the build" in row["note"]


def test_a_fixed_batch_graph_skips_other_batch_sizes(build_dir, tmp_path):
    copy = _copy(build_dir, tmp_path)
    path = copy / "rnet.fp32.onnx"
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(path))
    _set_file(copy, "rnet", path)
    res = bench_models(copy, networks=("rnet",), batches=(1, 2), repeats=1, warmup=0, threads=1)
    status = {(r["backend"], r["batch"]): (r["status"], r["note"]) for r in res["rows"]}
    assert status[("onnxruntime", 1)][0] == "ok"
    assert status[("onnxruntime", 2)] == ("skipped", "fixed batch 1 in the graph")


def test_bad_arguments_are_clear_errors(build_dir, tmp_path):
    with pytest.raises(InputError, match="unknown network.*choose from pnet"):
        bench_models(build_dir, networks=("vgg",))
    with pytest.raises(InputError, match="batch sizes must be positive"):
        bench_models(build_dir, batches=(0,))
    with pytest.raises(InputError, match="no build here; build it with `edge-build"):
        bench_models(tmp_path / "nothing")


# ------------------------------------------------------------------------------------------------- inputs, stats


def test_inputs_follow_the_specs():
    assert pnet_size(40) == (108, 144)
    ids = TensorSpec("input_ids", ("batch", 16), np.int64)
    feeds = make_feeds("text", [ids, TensorSpec("attention_mask", ("batch", 16), np.int64)], 3, vocab=50)
    assert feeds["input_ids"].shape == (3, 16) and 5 <= feeds["input_ids"].min() and feeds["input_ids"].max() < 50
    assert (feeds["attention_mask"] == 1).all()
    image = make_feeds("pnet", [TensorSpec("image", ("batch", 3, "height", "width"), np.float32)], 1)["image"]
    assert image.shape == (1, 3, 108, 144) and -1.0 <= image.min() and image.max() <= 1.0
    assert fixed_batch([TensorSpec("x", (4, 3), np.float32)]) == 4 and fixed_batch([ids]) is None
    with pytest.raises(InputError, match="dynamic dimension 1"):
        make_feeds("resnet18", [TensorSpec("faces", ("batch", "c", 224, 224), np.float32)], 1)


def test_summarize():
    s = summarize([3.0, 1.0, 2.0, 10.0], batch=4)
    assert s["min_ms"] == 1.0 and s["p50_ms"] == 2.5 and s["mean_ms"] == 4.0
    assert s["min_ms"] <= s["p50_ms"] <= s["p95_ms"] <= 10.0
    assert s["items_per_s"] == pytest.approx(4 * 1e3 / 4.0)


# ------------------------------------------------------------------------------------------------------- the CLI


def test_cli_writes_json_and_markdown_and_prints_the_table(build_dir, tmp_path, capsys):
    out_json, out_md = tmp_path / "b.json", tmp_path / "b.md"
    code = main(["models", "--engines", str(build_dir), "--networks", "rnet,lfmim", "--batches", "1", "2",
                 "--repeats", "2", "--warmup", "1", "--threads", "1", "--json", str(out_json), "--markdown",
                 str(out_md), "--no-progress", "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads(out_json.read_text())
    assert len(data["rows"]) == 2 * 2 * 2 and data["failures"] == []
    assert "| network | backend |" in printed and "| lfmim | torch-cpu | fp32 | 2 |" in printed
    assert out_md.read_text().count("\n| rnet |") == 4


def test_cli_profile_and_root_locate_the_build(build_dir, tmp_path, capsys):
    code = main(["models", "--profile", str(TINY), "--engines-root", str(build_dir.parents[1]), "--networks",
                 "rnet", "--batches", "1", "--repeats", "1", "--warmup", "0", "--no-baseline",
                 "--json", str(tmp_path / "b.json"), "--no-progress", "-q"])
    assert code == 0
    assert "| rnet | onnxruntime-cpu | fp32 | 1 |" in capsys.readouterr().out


def test_cli_missing_build_exits_2_with_the_fix(tmp_path, capsys):
    code = main(["models", "--engines", str(tmp_path / "none"), "--json", str(tmp_path / "b.json"), "-q"])
    assert code == 2
    assert "edge-bench: error:" in capsys.readouterr().err


def test_script_takes_the_same_flags():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_models.py"), "--help"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0
    for flag in ("--profile", "--target", "--engines-root", "--engines", "--networks", "--batches", "--repeats",
                 "--warmup", "--threads", "--no-baseline", "--json", "--markdown"):
        assert flag in done.stdout
