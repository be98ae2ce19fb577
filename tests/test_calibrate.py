"""edge-eval --calibrate on a real (synthetic) store: the calibration lands in the checkpoint, edge-eval reports ECE
before and after with reliability diagrams, the build's LFMIM exporter copies it into the manifest and the run
path's extractors read it back."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (the training extras: pip install 'lfmim-edge[train]')")

from edge.cli import eval as eval_cli  # noqa: E402
from edge.config import TrainConfig  # noqa: E402
from edge.confidence import Calibration  # noqa: E402
from edge.features.extractors import build_calibration  # noqa: E402
from edge.model.checkpoint import load_checkpoint  # noqa: E402
from edge.model.lfmim import LFMIM  # noqa: E402
from edge.profile import load_profile  # noqa: E402
from edge.train.loop import Trainer  # noqa: E402
from edge.train.store import FeatureStore  # noqa: E402
from edge.train.synthetic import write_synthetic_store  # noqa: E402

from conftest import TINY_PROFILE  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    cfg = load_profile(str(TINY_PROFILE)).lfmim
    write_synthetic_store(root / "store", cfg, sizes={"train": 96, "valid": 64, "test": 64}, seed=1)
    store = FeatureStore(root / "store")
    torch.manual_seed(0)
    trainer = Trainer(LFMIM(cfg), "paper", cfg.to_dict(), TrainConfig(epochs=3, batch_size=16, optimizer="adamw",
                                                                     lr=0.003), root / "run", progress=False)
    trainer.fit(store.split("train"), store.split("valid"), cfg.classes)
    return root, root / "run" / "best.safetensors"


def test_calibrate_then_evaluate_reports_ece_before_and_after(trained, capsys):
    root, ckpt = trained
    out = root / "calibrated.safetensors"
    assert eval_cli.main(["--calibrate", "--checkpoint", str(ckpt), "--store", str(root / "store"), "--no-progress",
                          "--calibrated-out", str(out), "-q"]) == 0
    meta = load_checkpoint(out).meta
    cal = Calibration.from_dict(meta["calibration"])
    assert set(cal.heads) == {"t", "a", "v", "m"}
    for head in cal.heads.values():
        assert head.fitted["split"] == "valid" and head.fitted["n"] == 64
        assert head.fitted["nll_after"] <= head.fitted["nll_before"] + 1e-9  # fitted by minimising the NLL there
    assert json.loads(out.with_suffix(".json").read_text())["meta"]["calibration"] == meta["calibration"]
    assert "calibration" not in load_checkpoint(ckpt).meta, "--calibrated-out leaves the input checkpoint alone"
    capsys.readouterr()
    report_dir = root / "eval"
    assert eval_cli.main(["--checkpoint", str(out), "--store", str(root / "store"), "--split", "test", "--out",
                          str(report_dir), "--no-progress", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "ECE before" in printed and "ECE after" in printed
    record = json.loads((report_dir / "calibration.json").read_text())
    for h in "tavm":
        entry = record["heads"][h]
        assert entry["after"]["temperature"] == pytest.approx(cal.head(h).temperature, rel=1e-5)
        assert 0.0 <= entry["before"]["ece"] <= 1.0 and 0.0 <= entry["after"]["ece"] <= 1.0
        assert entry["before"]["accuracy"] == entry["after"]["accuracy"]  # temperature keeps every prediction
        assert (report_dir / f"reliability_{h}.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Calibration" in (report_dir / "report.md").read_text()


def test_the_build_records_the_calibration_and_the_run_path_reads_it(trained, tmp_path):
    from edge.build.sources import EXPORTERS

    root, ckpt = trained
    calibrated = tmp_path / "c.safetensors"
    assert eval_cli.main(["--calibrate", "--checkpoint", str(ckpt), "--store", str(root / "store"), "--no-progress",
                          "--calibrated-out", str(calibrated), "--method", "temperature+prior", "-q"]) == 0
    text = TINY_PROFILE.read_text().replace("[lfmim]", f'[lfmim]\ncheckpoint = "{calibrated}"')
    profile_path = tmp_path / "tiny-calibrated.toml"
    profile_path.write_text(text)
    _, details = EXPORTERS["lfmim"](load_profile(str(profile_path)), tmp_path / "build", False)
    stored = load_checkpoint(calibrated).meta["calibration"]
    assert details["calibration"] == stored and stored["method"] == "temperature+prior"
    run = build_calibration({"networks": {"lfmim": {"source": "x", **details}}})
    assert run.head("v").temperature == pytest.approx(stored["heads"]["v"]["temperature"])
    assert run.head("v").bias is not None
    _, random = EXPORTERS["lfmim"](load_profile(str(TINY_PROFILE)), tmp_path / "random", True)
    assert "calibration" not in random and build_calibration({"random_weights": True, "networks": {}}).is_identity


def test_calibrate_errors_name_the_split(trained, capsys):
    root, ckpt = trained
    assert eval_cli.main(["--calibrate", "--checkpoint", str(ckpt), "--store", str(root / "store"), "--no-progress",
                          "--head-split", "v=fer_valid", "-q"]) == 2
    assert "no split 'fer_valid'" in capsys.readouterr().err
    assert eval_cli.main(["--calibrate", "--inconsistency", "--checkpoint", str(ckpt), "-q"]) == 2
    assert "two different jobs" in capsys.readouterr().err
