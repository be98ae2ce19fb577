"""edge-train: train LFMIM on a feature store (see `edge-data` to make one)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from edge.cli._common import add_dataclass_flags, dataclass_overrides, run_main, setup_logging
from edge.config import PRESETS, LFMIMConfig, TrainConfig, load_json, MODALITIES
from edge.errors import ConfigError, InputError

log = logging.getLogger("edge")

TRAIN_HELP = {
    "epochs": "number of epochs",
    "batch_size": "samples per step",
    "lr": "initial learning rate (paper: 0.005 with SGD)",
    "optimizer": "sgd (paper) or adamw",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay",
    "schedule": "lambda (lr/(epoch+1), the paper's LambdaLR), constant or cosine",
    "loss_weights": "beta_t beta_a beta_v beta_m",
    "label_mix": "0 = LFMIM (own labels); 1 = LFMIM-ML (multi-modal labels only)",
    "seed": "random seed (weights, shuffling, dropout)",
    "grad_clip": "clip the gradient norm (0 = off)",
    "workers": "data-loading workers",
}
#: Model options exposed as flags (the rest come from --model).
MODEL_FLAGS = {
    "d_model": "transformer width d (paper: 128)",
    "num_layers": "layers L per transformer (paper: 4)",
    "num_heads": "attention heads (paper: 8)",
    "dropout": "dropout rate",
    "pooling": "mean, max or first",
    "positional": "sinusoidal or learned",
    "conv_kernel": "kernel of the input Conv1d",
    "flow": "uni (LFMIM) or bi (PMR-like ablation: the multi-modal stream feeds back)",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-train",
        description="Train LFMIM (three uni-modal transformers, each on its own label, and a multi-modal "
                    "transformer fed layer by layer) on a feature store. Writes best.safetensors (by fused "
                    "weighted F1 on the validation split), last.safetensors, history.jsonl and curves.png.",
        epilog="Example: edge-data synthetic runs/synth && edge-train --store runs/synth --out runs/model --model tiny",
    )
    p.add_argument("--store", required=True, help="feature store folder (written by edge-data or edge-extract)")
    p.add_argument("--out", required=True, help="output folder for checkpoints and logs")
    p.add_argument("--model", default="paper",
                   help=f"model preset ({', '.join(PRESETS)}), a profile (starter, or a .toml file: its [lfmim] "
                        "section) or a JSON config file; presets take the store's feature dims and lengths "
                        "(default: paper)")
    p.add_argument("--train-split", default="train", help="split to train on (default: train)")
    p.add_argument("--val-split", default=None, help="split to validate on (default: valid, dev or val, whichever exists)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from another LFMIM checkpoint's weights wherever name and shape match (a warm start, "
                        "e.g. from the starter's LFMIM for a profile with another text encoder); the rest stays random")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or interrupted run in --out")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-q", "--quiet", action="store_true")
    train = p.add_argument_group("training (TrainConfig)")
    p.set_defaults(_train_fields=add_dataclass_flags(train, TrainConfig, TRAIN_HELP))
    model = p.add_argument_group("model (LFMIMConfig)")
    for name, text in MODEL_FLAGS.items():
        default = getattr(LFMIMConfig(), name)
        model.add_argument("--" + name.replace("_", "-"), dest=name, type=type(default), default=None,
                           help=f"{text} (default: from --model)")
    return p


def resolve_model_config(spec: str, store_specs: dict) -> LFMIMConfig:
    from edge.profile import load_profile, shipped_profiles

    if spec in PRESETS:
        return PRESETS[spec].replace(**{m: store_specs[m] for m in MODALITIES})
    if spec in shipped_profiles() or spec.endswith(".toml"):
        return load_profile(spec).lfmim  # the profile's LFMIM, feature sizes included (checked against the store)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"--model {spec!r}: neither a preset ({', '.join(PRESETS)}), a profile "
                          f"({', '.join(shipped_profiles())} or a .toml file) nor a JSON config file")
    return LFMIMConfig.from_dict(load_json(path), source=str(path))


def warm_start(model, path: str) -> None:
    """Copy the tensors of checkpoint ``path`` into ``model`` where name and shape match; log what stays random."""
    from edge._lazy import lazy_import
    from edge.assets import resolve
    from edge.model.checkpoint import load_checkpoint

    torch = lazy_import("torch", purpose="training")
    ckpt = load_checkpoint(resolve(path))
    own = model.state_dict()
    taken = {k: v for k, v in ckpt.state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not taken:
        raise InputError(f"--init {path}: no tensor of it fits this model (names or shapes differ everywhere); "
                         "pass an LFMIM checkpoint of the same d_model and layers")
    with torch.no_grad():
        for k, v in taken.items():
            own[k].copy_(v)
    fresh = sorted(set(own) - set(taken))
    log.info("--init %s: %d of %d tensors taken; random: %s", path, len(taken), len(own), ", ".join(fresh) or "none")


def pick_split(store, wanted: str | None, role: str) -> str:
    if wanted:
        return wanted
    for name in ("valid", "dev", "val", "validation"):
        if name in store.splits:
            return name
    raise InputError(f"{role}: the store has no validation split (splits: {', '.join(store.splits)}); "
                     "name one with --val-split")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet)

    def body() -> int:
        from edge._lazy import lazy_import
        from edge.model.lfmim import LFMIM
        from edge.train.loop import Trainer, check_store_matches, plot_history
        from edge.train.store import FeatureStore

        torch = lazy_import("torch", purpose="training")
        if args.threads:
            torch.set_num_threads(args.threads)
        tc = TrainConfig(**dataclass_overrides(args, args._train_fields))
        store = FeatureStore(args.store)
        cfg = resolve_model_config(args.model, store.specs)
        cfg = cfg.replace(**dataclass_overrides(args, MODEL_FLAGS))
        check_store_matches(store.specs, {m: cfg.spec(m) for m in MODALITIES}, store=args.store)
        if tuple(store.classes) != tuple(cfg.classes):
            raise ConfigError(f"{args.store}: store classes {store.classes} differ from the model's {cfg.classes}")
        train_split = store.split(args.train_split)
        val_split = store.split(pick_split(store, args.val_split, "edge-train"))
        out = Path(args.out)
        if args.resume and args.overwrite:
            raise InputError("--resume and --overwrite contradict each other; pass one")
        if not args.resume and (out / "last.safetensors").exists():
            if not args.overwrite:
                raise InputError(f"{out} already holds a training run; pass --resume to continue it, "
                                 "--overwrite to replace it, or choose another --out")
            for name in ("best.safetensors", "best.json", "last.safetensors", "last.json", "last.state.safetensors",
                         "history.jsonl", "curves.png"):
                (out / name).unlink(missing_ok=True)
        torch.manual_seed(tc.seed)
        model = LFMIM(cfg)
        if args.init and not args.resume:
            warm_start(model, args.init)
        trainer = Trainer(model, "paper", cfg.to_dict(), tc, out, device=args.device, progress=not args.no_progress)
        if args.resume:
            trainer.resume()
        log.info("training LFMIM (%d parameters) on %d samples, validating on %d; output in %s",
                 sum(p.numel() for p in model.parameters()), len(train_split), len(val_split), out)
        summary = trainer.fit(train_split, val_split, cfg.classes)
        plot_history(out)
        print(json.dumps(summary, indent=2))
        return 0

    return run_main("edge-train", body)


if __name__ == "__main__":
    raise SystemExit(main())
