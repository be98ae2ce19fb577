"""edge-data: make and inspect feature stores (synthetic sets, CHERMA feature releases)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge.cli._common import run_main, setup_logging
from edge.config import PRESETS, LFMIMConfig, MODALITIES, ModalitySpec
from edge.errors import InputError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-data",
        description="Make and inspect LFMIM feature stores (the on-disk format that edge-train and edge-eval read; "
                    "see docs/feature-store.md).",
    )
    p.add_argument("-q", "--quiet", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("synthetic", help="a synthetic store whose labels disagree at a known rate",
                       description="Write a synthetic store: each modality's features carry its own label; "
                                   "uni-modal labels agree with the multi-modal label with probability --agree.")
    s.add_argument("out", help="store folder to create")
    s.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                   help="feature dims and lengths of this model preset (default: tiny)")
    s.add_argument("--train", type=int, default=2000, help="training samples (default: 2000)")
    s.add_argument("--valid", type=int, default=500, help="validation samples (default: 500)")
    s.add_argument("--test", type=int, default=500, help="test samples (default: 500)")
    s.add_argument("--agree", type=float, default=0.7, help="P(uni-modal label = multi-modal label) (default: 0.7)")
    s.add_argument("--signal", type=float, default=1.0, help="strength of the planted class signal (default: 1)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true", help="replace an existing store at OUT")

    c = sub.add_parser("cherma", help="convert a CHERMA feature release into a store",
                       description="Convert the CHERMA feature release layout (split json files and text/, audio/, "
                                   "visual/ folders of .npy features) into a feature store; audio is uniformly "
                                   "sampled or zero-padded to the model's length as in the paper.")
    c.add_argument("root", help="CHERMA release folder")
    c.add_argument("out", help="store folder to create")
    c.add_argument("--splits", nargs="*", default=None, help="splits to convert (default: all found)")
    for m, spec in (("text", PRESETS["paper"].text), ("audio", PRESETS["paper"].audio), ("vision", PRESETS["paper"].vision)):
        c.add_argument(f"--{m}", nargs=2, type=int, metavar=("DIM", "LENGTH"), default=(spec.dim, spec.length),
                       help=f"{m} feature dim and sequence length (default: {spec.dim} {spec.length})")

    f = sub.add_parser("fixture", help="write a tiny CHERMA-layout fixture (random features, real label names)")
    f.add_argument("out", help="folder to create")
    f.add_argument("--per-split", type=int, default=24, help="samples per split (default: 24)")
    f.add_argument("--seed", type=int, default=0)

    i = sub.add_parser("info", help="describe a store and check every shard")
    i.add_argument("store", help="store folder")
    return p


def _config_from_flags(args) -> LFMIMConfig:
    return PRESETS["paper"].replace(**{m: ModalitySpec(*getattr(args, m)) for m in MODALITIES})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet)

    def body() -> int:
        if args.command == "synthetic":
            from edge.train.synthetic import write_synthetic_store

            if not 0.0 <= args.agree <= 1.0:
                raise InputError(f"--agree must be a probability in [0, 1], got {args.agree}")
            sizes = {"train": args.train, "valid": args.valid, "test": args.test}
            if args.overwrite and (Path(args.out) / "store.json").is_file():
                import shutil

                shutil.rmtree(args.out)
            root = write_synthetic_store(args.out, PRESETS[args.preset], sizes=sizes, agree=args.agree,
                                         signal=args.signal, seed=args.seed, progress=not args.quiet)
            print(f"synthetic store written to {root} ({sizes})")
        elif args.command == "cherma":
            from edge.train.cherma import convert_cherma

            convert_cherma(args.root, args.out, _config_from_flags(args), splits=args.splits, progress=not args.quiet)
            print(f"store written to {args.out}")
        elif args.command == "fixture":
            from edge.train.cherma import make_cherma_fixture

            make_cherma_fixture(args.out, args.per_split, PRESETS["paper"], args.seed)
            print(f"CHERMA-layout fixture written to {args.out}")
        else:
            from edge.train.store import FeatureStore

            store = FeatureStore(args.store)
            info = {"root": str(Path(args.store)), "classes": list(store.classes),
                    "features": {m: {"dim": s.dim, "length": s.length, "dtype": store.dtypes[m]}
                                 for m, s in store.specs.items()},
                    "splits": {name: store.split(name).check() for name in store.splits}}
            print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0

    return run_main("edge-data", body)


if __name__ == "__main__":
    raise SystemExit(main())
