"""Training end to end on real stores: checkpoints, resume, atomic writes, the CLI commands."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs PyTorch (the training extras: pip install 'lfmim-edge[train]')")

from edge.cli import data as data_cli  # noqa: E402
from edge.cli import eval as eval_cli  # noqa: E402
from edge.cli import train as train_cli  # noqa: E402
from edge.config import PRESETS, TrainConfig  # noqa: E402
from edge.errors import CheckpointError  # noqa: E402
from edge.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from edge.model.lfmim import LFMIM  # noqa: E402
from edge.model.loading import load_model  # noqa: E402
from edge.train.loop import Trainer, predict  # noqa: E402
from edge.train.store import FeatureStore  # noqa: E402
from edge.train.synthetic import write_synthetic_store  # noqa: E402

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    root = tmp_path_factory.mktemp("store") / "synth"
    write_synthetic_store(root, TINY, sizes={"train": 96, "valid": 48, "test": 40}, seed=3)
    return FeatureStore(root)


def _train(store, out, epochs, resume=False, flow="uni"):
    torch.manual_seed(0)
    cfg = TINY.replace(dropout=0.1, flow=flow)
    tc = TrainConfig(epochs=epochs, batch_size=16, seed=5, optimizer="sgd", momentum=0.9)
    trainer = Trainer(LFMIM(cfg), "paper", cfg.to_dict(), tc, out, progress=False)
    if resume:
        trainer.resume()
    summary = trainer.fit(store.split("train"), store.split("valid"), cfg.classes)
    return trainer, summary


def test_training_writes_checkpoints_history_and_reloads_exactly(store, tmp_path):
    trainer, summary = _train(store, tmp_path, epochs=2)
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0]["lr"] == pytest.approx(0.005) and history[1]["lr"] == pytest.approx(0.0025)  # lr / (epoch+1)
    best = max(h["val_weighted_f1"]["m"] for h in history)
    assert summary["best_fused_weighted_f1"] == pytest.approx(best, abs=1e-5)
    model, ckpt = load_model(tmp_path / "last.safetensors")
    assert ckpt.meta["epoch"] == 2 and ckpt.variant == "paper"
    reloaded, _ = predict(model, store.split("test"))
    original, _ = predict(trainer.model, store.split("test"))
    for head in "tavm":
        np.testing.assert_array_equal(reloaded[head].probs, original[head].probs)
    assert json.loads((tmp_path / "best.json").read_text())["config"] == ckpt.config


def test_resume_continues_exactly_where_the_run_stopped(store, tmp_path):
    full, _ = _train(store, tmp_path / "full", epochs=3)
    _train(store, tmp_path / "part", epochs=1)
    resumed, _ = _train(store, tmp_path / "part", epochs=3, resume=True)
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    lines = (tmp_path / "part" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_a_failed_checkpoint_write_leaves_the_old_one_intact(tmp_path):
    path = tmp_path / "best.safetensors"
    good = {"w": torch.ones(3)}
    save_checkpoint(path, good, TINY.to_dict())
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint(path, {"w": "not a tensor"}, TINY.to_dict())
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["best.json", "best.safetensors"], "no temporary files left behind"
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)


def test_bad_checkpoints_are_one_clear_error(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(missing)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="corrupt.safetensors.*not a readable"):
        load_checkpoint(corrupt)
    truncated = tmp_path / "truncated.safetensors"
    save_checkpoint(truncated, LFMIM(TINY).state_dict(), TINY.to_dict())
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        load_model(truncated)
    mismatch = tmp_path / "mismatch.safetensors"
    save_checkpoint(mismatch, LFMIM(TINY).state_dict(), TINY.replace(d_model=64).to_dict())
    with pytest.raises(CheckpointError, match="does not match the model config.*shape mismatch"):
        load_model(mismatch)


def test_cli_train_then_eval_on_a_synthetic_store(tmp_path, capsys):
    root = tmp_path / "synth"
    assert data_cli.main(["-q", "synthetic", str(root), "--train", "64", "--valid", "32", "--test", "32"]) == 0
    out = tmp_path / "run"
    args = ["--store", str(root), "--out", str(out), "--model", "tiny", "--epochs", "2", "--no-progress", "-q",
            "--optimizer", "adamw", "--lr", "0.002", "--flow", "bi"]
    assert train_cli.main(args) == 0
    assert (out / "best.safetensors").is_file() and (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert load_checkpoint(out / "best.safetensors").config["flow"] == "bi"
    assert train_cli.main(args) == 2, "a second run into the same folder without --resume must refuse"
    assert "--resume" in capsys.readouterr().err
    assert eval_cli.main(["--checkpoint", str(out / "best.safetensors"), "--store", str(root), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for word in ("anger", "surprise", "overall", "multimodal"):
        assert word in printed
    report = json.loads((out / "eval-test" / "report.json").read_text())
    assert set(report["heads"]) == {"t", "a", "v", "m"}
    assert (out / "eval-test" / "confusion_m.png").is_file()
    # --against m: every head scored on the multimodal label; the fused head's figures are the same as before, the
    # uni-modal heads' are not (the synthetic labels disagree with the multimodal one at a known rate)
    assert eval_cli.main(["--checkpoint", str(out / "best.safetensors"), "--store", str(root), "--no-progress",
                          "--against", "m", "-q"]) == 0
    against = json.loads((out / "eval-test-against-m" / "report.json").read_text())
    assert against["heads"]["m"] == report["heads"]["m"]
    assert any(against["heads"][h] != report["heads"][h] for h in "tav")
    assert "scored against the m label" in capsys.readouterr().out


def test_train_model_from_a_profile_reads_its_lfmim_section():
    from edge.profile import load_profile

    config = train_cli.resolve_model_config("starter", {})
    assert config == load_profile("starter").lfmim and config.d_model == 96 and config.audio.length == 50


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert train_cli.main(["--store", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-train: error:") and "none" in err[0]
    assert eval_cli.main(["--checkpoint", str(tmp_path / "x.safetensors"), "--store", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err


def test_train_flags_match_the_config_dataclasses():
    import dataclasses

    parser = train_cli.build_parser()
    dests = {a.dest for a in parser._actions}
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= dests
    assert set(train_cli.MODEL_FLAGS) <= {f.name for f in dataclasses.fields(type(TINY))}
    assert set(train_cli.MODEL_FLAGS) <= dests
    args = parser.parse_args(["--store", "s", "--out", "o", "--loss-weights", "1", "2", "3", "4", "--label-mix", "1"])
    from edge.cli._common import dataclass_overrides

    tc = TrainConfig(**dataclass_overrides(args, args._train_fields))
    assert tc.loss_weights == (1.0, 2.0, 3.0, 4.0) and tc.label_mix == 1.0 and tc.lr == 0.005


def test_cli_end_to_end_on_a_cherma_layout_fixture(tmp_path, capsys):
    fixture, store = tmp_path / "cherma", tmp_path / "store"
    assert data_cli.main(["-q", "fixture", str(fixture), "--per-split", "20"]) == 0
    assert data_cli.main(["-q", "cherma", str(fixture), str(store)]) == 0
    capsys.readouterr()
    assert data_cli.main(["info", str(store)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["features"]["audio"] == {"dim": 768, "length": 100, "dtype": "float16"}
    assert info["splits"] == {"train": 20, "valid": 20, "test": 20}
    out = tmp_path / "run"
    assert train_cli.main(["--store", str(store), "--out", str(out), "--model", "paper", "--d-model", "32",
                           "--num-layers", "1", "--num-heads", "4", "--epochs", "1", "--batch-size", "8",
                           "--no-progress", "-q"]) == 0
    ckpt = load_checkpoint(out / "best.safetensors")
    assert ckpt.config["text"] == {"dim": 768, "length": 80} and ckpt.config["d_model"] == 32
    assert eval_cli.main(["--checkpoint", str(out / "best.safetensors"), "--store", str(store), "--split", "test",
                          "--no-progress", "-q"]) == 0
    report = json.loads((out / "eval-test" / "report.json").read_text())
    assert report["heads"]["m"]["overall"]["n"] == 20
    assert eval_cli.main(["--inconsistency", "--store", str(store), "--out", str(tmp_path / "inc")]) == 0
    assert "Incon(u1, u2)" in capsys.readouterr().out


def test_eval_refuses_a_store_that_does_not_fit_the_checkpoint(store, tmp_path, capsys):
    path = tmp_path / "paper.safetensors"
    save_checkpoint(path, LFMIM(PRESETS["paper"]).state_dict(), PRESETS["paper"].to_dict())
    assert eval_cli.main(["--checkpoint", str(path), "--store", str(store.root)]) == 2
    err = capsys.readouterr().err
    assert "features do not fit the model" in err and "(768, 80)" in err
