"""edge-bench: benchmarks. ``edge-bench models``: every network of a build, per backend and precision, against
PyTorch eager FP32 measured in the same run; JSON and a markdown table."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from edge.cli._common import run_main, setup_logging

log = logging.getLogger("edge")

PROG = "edge-bench"


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(v for v in text.replace(" ", "").split(",") if v)


def _add_models(sub: Any) -> None:
    p = sub.add_parser(
        "models", help="latency / throughput / memory of each network of a build vs PyTorch eager FP32",
        description="For each network of a build (engines/<profile>/<target>/), each backend and precision that runs "
                    "here (ONNX Runtime CPU FP32 and the build's INT8 / FP16 variant, ONNX Runtime CUDA and TensorRT "
                    "plans where present) and each batch size: warm-up, timed repetitions, min / p50 / p95 latency, "
                    "throughput and peak memory, with the speedup over PyTorch eager FP32 measured in the same run.",
        epilog="Example:\n  edge-bench models --profile paper --target cpu --batches 1,4 --threads 2 "
               "--markdown bench-models.md",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="paper", help="profile name or TOML file of the build (default: paper)")
    p.add_argument("--target", default="cpu", choices=("cpu", "gpu"), help="build target (default: cpu)")
    p.add_argument("--engines-root", default="engines", help="where builds live (default: engines)")
    p.add_argument("--engines", action="append", default=None, metavar="DIR",
                   help="a build folder (engines/<profile>/<target>); repeat to compare builds; overrides "
                        "--profile / --target / --engines-root")
    p.add_argument("--networks", type=_names, default=None,
                   help="comma-separated subset of pnet,rnet,onet,resnet18,text,audio,lfmim (default: all)")
    p.add_argument("--batches", type=_ints, nargs="+", default=None,
                   help="batch sizes, comma- or space-separated (default: 1,4,8)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing (default: 3)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (default: 20)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads for ONNX Runtime and torch alike (default: every usable core)")
    p.add_argument("--no-baseline", action="store_true", help="skip the PyTorch eager FP32 baseline")
    p.add_argument("--json", default="bench-models.json", help="JSON output (default: bench-models.json)")
    p.add_argument("--markdown", default=None, help="also write the markdown table here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_models)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Benchmarks of lfmim-edge builds.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_models(sub)
    return p


def _batches(groups: list[tuple[int, ...]] | None) -> tuple[int, ...]:
    return tuple(dict.fromkeys(b for group in groups for b in group)) if groups else (1, 4, 8)


def _build_dirs(args: argparse.Namespace) -> list[Path]:
    if args.engines:
        return [Path(d) for d in args.engines]
    from edge.profile import load_profile

    return [Path(args.engines_root) / load_profile(args.profile).name / args.target]


def _write(path: str | Path, text: str) -> None:
    from edge.model.checkpoint import write_text_atomic

    write_text_atomic(path, text)


def _models(args: argparse.Namespace) -> int:
    from edge.bench.models import bench_models, to_markdown

    def save(result: dict[str, Any]) -> None:
        _write(args.json, json.dumps(result, indent=2, default=str) + "\n")

    result = bench_models(_build_dirs(args), networks=args.networks, batches=_batches(args.batches), warmup=args.warmup,
                          repeats=args.repeats, threads=args.threads, baseline=not args.no_baseline,
                          progress=not args.no_progress, on_update=save)
    save(result)
    table = to_markdown(result)
    if args.markdown:
        _write(args.markdown, table)
    print(table, end="")
    failed = len(result["failures"])
    print(json.dumps({"json": str(args.json), "markdown": args.markdown, "rows": len(result["rows"]),
                      "failed": failed}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=getattr(args, "quiet", False))
    return run_main(PROG, lambda: args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
