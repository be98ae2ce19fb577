"""edge-import-authors: turn a checkpoint of the authors' public LFMIM code into an lfmim-edge checkpoint."""

from __future__ import annotations

import argparse
import json

from edge.cli._common import run_main, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-import-authors",
        description="Import a checkpoint saved by the authors' public code (sunjunaimer/LFMIM, LFMIM0723v2: "
                    "torch.save of a DistributedDataParallel state_dict, keys 'module.*') into a safetensors "
                    "checkpoint that edge-eval and the build commands read. The file is read without unpickling "
                    "arbitrary objects (torch.load weights_only).",
        epilog="Example: edge-import-authors saved_models/LFMIM_19.pth models/authors.safetensors",
    )
    p.add_argument("src", help="the authors' .pth checkpoint")
    p.add_argument("dst", help="checkpoint to write (.safetensors)")
    p.add_argument("--heads", type=int, default=None,
                   help="attention heads (not recoverable from shapes; default: 16, the code's default)")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet)

    def body() -> int:
        from edge.model.import_authors import import_authors_checkpoint
        from edge.model.checkpoint import read_metadata

        config = {"heads": args.heads} if args.heads else None
        path = import_authors_checkpoint(args.src, args.dst, config=config)
        variant, cfg, _ = read_metadata(path)
        print(json.dumps({"written": str(path), "variant": variant, "config": cfg}, indent=2, ensure_ascii=False))
        return 0

    return run_main("edge-import-authors", body)


if __name__ == "__main__":
    raise SystemExit(main())
