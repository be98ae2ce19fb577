"""edge-build: ONNX, quantized (INT8 / FP16) variants with a fidelity gate, and TensorRT engines for a profile."""

from __future__ import annotations

import argparse
import json
import logging

from edge.cli._common import run_main, setup_logging

log = logging.getLogger("edge")


def build_parser() -> argparse.ArgumentParser:
    from edge.build.builder import PRECISIONS, TARGETS

    p = argparse.ArgumentParser(
        prog="edge-build",
        description="Export every network of a profile (MTCNN P/R/O-Net, ResNet18, the text and audio encoders, "
                    "LFMIM) to ONNX with parity checks, make the INT8 (explicit Q/DQ) or FP16 variants, hold them "
                    "to a fidelity gate on held-out calibration data, build TensorRT engines where a GPU and "
                    "tensorrt are present, and write engines/<profile>/<target>/ with manifest.json.",
        epilog="Examples:\n  edge-build                       # the starter profile, INT8 for the CPU (what edge-run builds itself)\n"
               "  edge-build --profile starter --precision int8 --target gpu\n"
               "  edge-build --profile paper --precision int8 --target cpu --random-weights\n"
               "  edge-build --profile my.toml --precision fp16 --target gpu --calibration-data ~/clips",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--profile", default="starter", help="shipped profile name (starter, paper) or a TOML file (default: starter)")
    p.add_argument("--precision", default="int8", choices=PRECISIONS,
                   help="int8 follows the per-network policy of the target (default: int8)")
    p.add_argument("--target", default="cpu", choices=TARGETS,
                   help="cpu: ONNX Runtime forms (U8S8); gpu: TensorRT forms (S8S8 / FP16) and engines (default: cpu)")
    p.add_argument("--out-root", default="engines", help="where builds go (default: engines)")
    p.add_argument("--random-weights", action="store_true",
                   help="random weights for every network whose weights are not at hand (mechanics and cost only)")
    p.add_argument("--calibration-data", default=None,
                   help="folder the calibration recipes draw from (default: $LFMIM_DATA or ../shared/data); "
                        "'demo': check a profile that ships its quantized networks (starter) on the demo clip")
    p.add_argument("--recipes", default=None, help="calibration recipes (default: calibration/recipes.toml)")
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="fidelity gate: top-1 agreement of the fused head with FP32 (default: 0.99)")
    p.add_argument("--min-cosine", type=float, default=0.99,
                   help="fidelity gate: cosine of extractor features with FP32 (default: 0.99)")
    p.add_argument("--force", action="store_true", help="keep a variant that fails the fidelity gate (logged)")
    p.add_argument("--fallback", action="store_true",
                   help="a variant that fails the fidelity gate on this machine runs in FP32 instead (one warning "
                        "line; what the first edge-run does); without it a failed gate stops the build")
    p.add_argument("--select", default="fastest", choices=("fastest", "asked"),
                   help="fastest: per network keep the fastest variant that passes the gate (CPU: FP32 and the "
                        "variant are timed, batch 1); asked: keep the policy's variant whenever it passes "
                        "(default: fastest)")
    p.add_argument("--tensorrt", default="auto", choices=("auto", "off"),
                   help="build TensorRT plans for --target gpu when possible (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads during calibration")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def fidelity_summary(fid: dict | None) -> str:
    """One cell of the build table: the gated figure and whether it passed."""
    if not fid:
        return "- (fp32)"
    if fid.get("passed") is None:
        return f"skipped ({fid.get('skipped', '')})"
    outputs = fid.get("outputs", {})
    if fid.get("kind") == "classifier":
        head = fid.get("fused_head", "m")
        figure = f"fused agreement {outputs.get(head, {}).get('agreement', float('nan')):.4f}"
    else:
        figure = "min mean cosine " + f"{min((o.get('mean_cosine', 1.0) for o in outputs.values()), default=1.0):.5f}"
    verdict = "passed" if fid["passed"] else ("FORCED" if fid.get("forced") else "failed")
    return f"{verdict}: {figure}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet)

    def body() -> int:
        from edge.build.builder import BuildOptions, build
        from edge.runtime.manifest import read_manifest

        opts = BuildOptions(profile=args.profile, precision=args.precision, target=args.target,
                            out_root=args.out_root, random_weights=args.random_weights,
                            calibration_data=args.calibration_data, recipes=args.recipes, force=args.force,
                            fallback=args.fallback, select=args.select,
                            min_agreement=args.min_agreement, min_cosine=args.min_cosine, threads=args.threads,
                            tensorrt=args.tensorrt, progress=not args.no_progress)
        path = build(opts)
        data = read_manifest(path.parent)
        rows = [f"  {'network':9s} {'kept':13s} {'file':34s} {'fidelity':36s} batch-1 ms (fp32 / variant)"]
        for name, entry in data["networks"].items():
            timing = entry.get("timing")
            ms = f"{timing['fp32_ms']:.3f} / {timing['variant_ms']:.3f}" if timing else "-"
            rows.append(f"  {name:9s} {entry['precision']:13s} {entry['onnx']['file']:34s} "
                        f"{fidelity_summary(entry.get('fidelity')):36s} {ms}")
        print(f"built {data['profile']['name']} for {data['target']} ({data['precision']}) in "
              f"{data['build_seconds']} s -> {path.parent}/")
        print("\n".join(rows))
        print(json.dumps({"manifest": str(path)}))
        return 0

    return run_main("edge-build", body)


if __name__ == "__main__":
    raise SystemExit(main())
