"""edge-eval: per-emotion and overall F1 / accuracy of every head, and the paper's label-inconsistency statistics."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from edge.cli._common import run_main, setup_logging
from edge.config import HEADS
from edge.errors import InputError

log = logging.getLogger("edge")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-eval",
        description="Evaluate an LFMIM checkpoint on a feature store split: F1 per emotion and overall (weighted) "
                    "F1 and accuracy for each head t, a, v, m, laid out like the paper's Tables 2 and 4, with "
                    "confusion matrices (PNG) and JSON / markdown reports. With --inconsistency, compute the "
                    "paper's section 3.2 label statistics (Incon(u1, u2) and Incon(u, m; y)) and Figure 1 plots "
                    "from any data set with per-modality labels.",
        epilog="Examples:\n  edge-eval --checkpoint runs/model/best.safetensors --store runs/synth --split test\n"
               "  edge-eval --inconsistency --labels ../shared/data/emotiontalk/emotiontalk.csv\n"
               "  edge-eval --inconsistency --labels ../shared/data/crema-d-votes/summaryTable.csv   # CREMA-D's votes\n"
               "  edge-eval --calibrate --checkpoint runs/model/best.safetensors --store runs/synth "
               "--head-split v=fer_valid",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", help="checkpoint (.safetensors) written by edge-train or edge-import-authors")
    p.add_argument("--store", help="feature store folder")
    p.add_argument("--split", default=None,
                   help="split to evaluate (default: test for a checkpoint; every split for --inconsistency)")
    p.add_argument("--out", default=None, help="report folder (default: <checkpoint folder>/eval-<split>, "
                                               "or ./inconsistency-<name>)")
    p.add_argument("--inconsistency", action="store_true",
                   help="label-inconsistency statistics instead of model evaluation")
    p.add_argument("--labels", help="CSV label table for --inconsistency (columns label_text, label_audio, "
                                    "label_vision, label_multimodal, and optionally split), or CREMA-D's "
                                    "summaryTable.csv (recognised by its header; text = neutral, the voice, face "
                                    "and multimodal votes; --split train/valid/test by actor)")
    p.add_argument("--ties", choices=("drop", "top"), default="drop",
                   help="CREMA-D votes split between several codes: leave the clip out (default) or take the code "
                        "with the highest agreement level")
    p.add_argument("--calibrate", action="store_true",
                   help="fit each head's calibration (temperature scaling) on validation data and store it in the "
                        "checkpoint (or --calibrated-out); later evaluations report ECE before and after")
    p.add_argument("--head-split", action="append", default=[], metavar="HEAD=SPLIT",
                   help="with --calibrate: the split a head is calibrated on (default: --split, else valid); "
                        "repeatable, e.g. --head-split v=fer_valid --head-split a=ravdess_valid")
    p.add_argument("--method", choices=("temperature", "temperature+prior"), default="temperature",
                   help="with --calibrate: temperature only (keeps every prediction), or temperature plus a per-class "
                        "prior correction fitted on the same split")
    p.add_argument("--calibrated-out", default=None,
                   help="with --calibrate: write the calibrated checkpoint here instead of over --checkpoint")
    p.add_argument("--vocabulary", default="canonical",
                   help="label vocabulary of --labels (canonical, cherma, authors, ...; default: canonical)")
    p.add_argument("--against", choices=("t", "a", "v", "m"), default=None,
                   help="score every head against this one label instead of its own (m: each uni-modal head "
                        "alone vs the fused head on the multimodal label)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def _inconsistency(args) -> int:
    from edge.labels import CLASSES
    from edge.train.inconsistency import format_inconsistency, inconsistency_stats, write_inconsistency_report

    if bool(args.labels) == bool(args.store):
        raise InputError("--inconsistency needs exactly one of --labels FILE.csv or --store DIR")
    if args.labels:
        from edge.train.crema_votes import is_crema_votes, votes_label_table
        from edge.train.tables import read_label_table

        if is_crema_votes(args.labels):
            table = votes_label_table(args.labels, ties=args.ties, split=args.split)
        else:
            table = read_label_table(args.labels, vocabulary=args.vocabulary, split=args.split)
        labels, classes, name = table.labels, CLASSES, Path(args.labels).stem
    else:
        from edge.train.store import FeatureStore

        store = FeatureStore(args.store)
        import numpy as np

        splits = [args.split] if args.split else store.splits
        labels = np.concatenate([store.split(s).labels() for s in splits])
        classes, name = store.classes, Path(args.store).name
    stats = inconsistency_stats(labels, classes)
    out = Path(args.out or f"inconsistency-{name}" + (f"-{args.split}" if args.split else ""))
    title = f"Label inconsistency: {name}" + (f" ({args.split})" if args.split else "")
    write_inconsistency_report(stats, out, title=title)
    print(format_inconsistency(stats))
    print(f"\nreport, JSON and Figure 1 plots written to {out}/")
    return 0


def _calibrate(args) -> int:
    from edge.confidence import parse_head_splits
    from edge.train.calibrate import calibrate_checkpoint

    if not args.checkpoint or not args.store:
        raise InputError("--calibrate needs --checkpoint and --store")
    splits = parse_head_splits(args.head_split, args.split or "valid")
    calibration = calibrate_checkpoint(args.checkpoint, args.store, splits, method=args.method,
                                       out=args.calibrated_out, batch_size=args.batch_size, device=args.device,
                                       progress=not args.no_progress)
    print(json.dumps(calibration.to_dict(), indent=2))
    print(f"calibration written into {args.calibrated_out or args.checkpoint}")
    return 0


def _evaluate(args) -> int:
    from edge.model.loading import input_specs, load_model
    from edge.train.loop import check_store_matches, predict
    from edge.train.reports import write_eval_report
    from edge.train.store import FeatureStore

    if not args.checkpoint or not args.store:
        raise InputError("model evaluation needs --checkpoint and --store (or pass --inconsistency)")
    model, ckpt = load_model(args.checkpoint, device=args.device)
    store = FeatureStore(args.store)
    check_store_matches(store.specs, input_specs(ckpt.variant, ckpt.config), store=args.store)
    classes = tuple(ckpt.config.get("classes") or store.classes)
    if tuple(store.classes) != classes:
        raise InputError(f"{args.store}: store classes {tuple(store.classes)} differ from the checkpoint's {classes}")
    split_name = args.split or "test"
    split = store.split(split_name)
    preds, losses = predict(model, split, batch_size=args.batch_size, device=args.device,
                            progress=not args.no_progress, desc=f"evaluate {split_name}", against=args.against)
    results = {h: (p.y_true, p.y_pred) for h, p in preds.items() if len(p.y_true)}
    suffix = f"-against-{args.against}" if args.against else ""
    out = Path(args.out or Path(args.checkpoint).parent / f"eval-{split_name}{suffix}")
    title = f"{Path(args.checkpoint).name} on {Path(args.store).name}/{split_name} ({len(split)} samples)"
    if args.against:
        title += f"; every head scored against the {args.against} label"
    markdown = write_eval_report(results, classes, out, title=title)
    markdown += _calibration_section(preds, ckpt.meta, out, title)
    print(markdown)
    print(json.dumps({"loss": dict(zip(HEADS, [round(float(x), 4) for x in losses]))}))
    print(f"report.md, report.json and confusion matrices written to {out}/")
    return 0


def _calibration_section(preds, meta, out: Path, title: str) -> str:
    """ECE before / after per head (reliability PNGs), appended to report.md and stored in calibration.json."""
    from edge.model.checkpoint import write_text_atomic
    from edge.train.calibrate import checkpoint_calibration
    from edge.train.calibration_report import calibration_report

    record, section = calibration_report({h: p for h, p in preds.items() if len(p.y_true)},
                                         checkpoint_calibration(meta), out, title=title)
    write_text_atomic(out / "calibration.json", json.dumps(record, indent=2) + "\n")
    report = out / "report.md"
    write_text_atomic(report, report.read_text(encoding="utf-8") + "\n" + section)
    return "\n" + section


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet)
    body = _inconsistency if args.inconsistency else _calibrate if args.calibrate else _evaluate
    return run_main("edge-eval", lambda: _one_job(args) or body(args))


def _one_job(args) -> None:
    if args.inconsistency and args.calibrate:
        raise InputError("--inconsistency and --calibrate are two different jobs; pass one of them")


if __name__ == "__main__":
    raise SystemExit(main())
