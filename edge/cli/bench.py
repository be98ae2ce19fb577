"""edge-bench: benchmarks. ``edge-bench models``: every network of a build, per backend and precision, against
PyTorch eager FP32 measured in the same run; ``edge-bench pipeline``: the whole live loop replaying a clip, per
build, speed and face-detection interval; ``edge-bench asr``: speech recognizers' error rates, compute and latency
on real speech, pocketsphinx as the baseline. Each writes JSON and a markdown table."""

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
    p.add_argument("--profile", default="starter", help="profile name or TOML file of the build (default: starter)")
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


def _speeds(text: str) -> tuple[str, ...]:
    values = _names(text)
    bad = [v for v in values if v not in ("realtime", "max")]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"expected realtime and/or max, got {text!r}")
    return values


def _labelled(text: str) -> tuple[str, str]:
    """``label=DIR`` or ``DIR`` (labelled by the build's precision and target)."""
    label, sep, directory = text.partition("=")
    return (label, directory) if sep and label and directory else ("", text)


def default_clip() -> Path | None:
    """The CREMA-D sample beside the repository (``$LFMIM_DATA`` or ``../shared/data``), None when absent."""
    import os

    root = Path(os.environ.get("LFMIM_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
    clip = root / "crema-d-samples" / "1001_DFA_HAP_XX.mp4"
    return clip if clip.is_file() else None


def _add_pipeline(sub: Any) -> None:
    p = sub.add_parser(
        "pipeline", help="the live loop on a replayed clip: real-time factor, latency, CPU, memory per build",
        description="Replay a clip through the live loop (vision, VAD, ASR, encoders, LFMIM) for each build, speed "
                    "(realtime: paced like a camera, end-to-end latency measured; max: as fast as possible) and "
                    "face-detection interval (1 = detect on every frame, the naive baseline): compute seconds per "
                    "media second per stage and in total (real-time factor), end-to-end latency p50 / p95 / p99, "
                    "CPU use, peak memory, dropped frames and lost audio.",
        epilog="Example:\n  edge-bench pipeline --engines int8=engines/paper/cpu --loop 4 --threads 2 "
               "--markdown bench-pipeline.md",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    clip = default_clip()
    p.add_argument("--clip", default=None,
                   help=f"video with sound to replay (default: {clip or 'a synthesised spoken sentence'})")
    p.add_argument("--loop", type=int, default=1, help="play the clip N times in a row (default: 1)")
    p.add_argument("--profile", default=None,
                   help="profile name or TOML file (default: the one each build was made from; paper without "
                        "--engines)")
    p.add_argument("--target", default="cpu", choices=("cpu", "gpu"), help="build target (default: cpu)")
    p.add_argument("--engines-root", default="engines", help="where builds live (default: engines)")
    p.add_argument("--engines", action="append", default=None, metavar="[LABEL=]DIR", type=_labelled,
                   help="a build folder; repeat to compare builds (e.g. int8=engines/paper/cpu); overrides "
                        "--target / --engines-root")
    p.add_argument("--fp32", action="store_true",
                   help="also run the FP32 networks a quantised build keeps beside its own")
    p.add_argument("--speeds", type=_speeds, default=("realtime", "max"), help="realtime,max (default: both)")
    p.add_argument("--detect-every", type=_ints, default=(1, 4),
                   help="face-detection intervals; 1 is the naive baseline (default: 1,4)")
    p.add_argument("--repeats", type=int, default=1, help="runs per configuration (default: 1)")
    p.add_argument("--asr", default="pocketsphinx",
                   help="speech recognizers, comma-separated, each run in turn: auto, whisper, whisper-onnx, "
                        "pocketsphinx or none (default: pocketsphinx, the naive baseline)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per network (default: its own)")
    p.add_argument("--json", default="bench-pipeline.json", help="JSON output (default: bench-pipeline.json)")
    p.add_argument("--markdown", default=None, help="also write the markdown table here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_pipeline)


def _add_asr(sub: Any) -> None:
    from edge.bench.asr_data import SETS, SPLITS

    p = sub.add_parser(
        "asr", help="speech recognition: WER / CER, compute and transcript latency per backend and model",
        description="Each system (backend, model, options) over real recorded speech (RAVDESS, CREMA-D, ESD from "
                    "../shared/data or $LFMIM_DATA; the Mandarin sample, scored by character error rate) and "
                    "espeak-ng speech made here: error rate after normalisation, compute per utterance and per media "
                    "second, end-of-speech -> final-transcript latency p50 / p95. Speech is cut by the real VAD as "
                    "in the live loop. pocketsphinx, the naive baseline, is in the default systems.",
        epilog="Examples:\n  edge-bench asr --limit 20\n"
               "  edge-bench asr --systems pocketsphinx,whisper,'whisper@window_s=10' --sets ravdess,esd --split test\n"
               "  edge-bench asr --systems 'whisper@language=set' 'whisper@language=set;prompt=' --sets aishell",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", nargs="+", default=["pocketsphinx,whisper"],
                   help="NAME[:MODEL][@key=value;...], comma- or space-separated (default: pocketsphinx,whisper)")
    p.add_argument("--sets", type=_names, default=SETS, help=f"comma-separated, of {','.join(SETS)} (default: all)")
    p.add_argument("--split", default="all", choices=SPLITS,
                   help="val: odd positions of each set's order, test: even ones (choose on val, report on test)")
    p.add_argument("--limit", type=int, default=0, help="at most N utterances per set (spread over it; 0 = all)")
    p.add_argument("--segments", default="vad", choices=("vad", "whole"),
                   help="vad: cut by the live loop's VAD (default); whole: transcribe each file whole")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per recognizer (default: its own)")
    p.add_argument("--json", default="bench-asr.json", help="JSON output (default: bench-asr.json)")
    p.add_argument("--markdown", default=None, help="also write the markdown table here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_asr)


def _asr(args: argparse.Namespace) -> int:
    from edge.bench.asr import bench_asr, to_markdown

    def save(result: dict[str, Any]) -> None:
        _write(args.json, json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")

    systems = [s for group in args.systems for s in _systems(group)]
    result = bench_asr(systems, sets=args.sets, split=args.split, limit=args.limit, whole=args.segments == "whole",
                       threads=args.threads, progress=not args.no_progress, on_update=save)
    return _report(args, result, save, to_markdown)


def _report(args: argparse.Namespace, result: dict[str, Any], save: Any, to_markdown: Any) -> int:
    """Save the final result, write / print its markdown table, and print where everything went."""
    save(result)
    table = to_markdown(result)
    if args.markdown:
        _write(args.markdown, table)
    print(table, end="")
    print(json.dumps({"json": str(args.json), "markdown": args.markdown, "rows": len(result["rows"]),
                      "failed": len(result["failures"])}))
    return 0


def _systems(text: str) -> list[str]:
    """Systems are separated by commas (options inside one are separated by semicolons)."""
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Benchmarks of lfmim-edge builds.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_models(sub)
    _add_pipeline(sub)
    _add_asr(sub)
    return p


def _batches(groups: list[tuple[int, ...]] | None) -> tuple[int, ...]:
    return tuple(dict.fromkeys(b for group in groups for b in group)) if groups else (1, 4, 8)


def _build_dirs(args: argparse.Namespace) -> list[Path]:
    if args.engines:
        return [Path(d) for d in args.engines]
    from edge.profile import load_profile

    return [Path(args.engines_root) / load_profile(args.profile).name / args.target]


def _write(path: str | Path, text: str) -> None:
    from edge.fileio import write_text_atomic

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


def _pipeline_builds(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
    if args.engines:
        return [(label or _default_label(d), d, args.profile) for label, d in args.engines]
    from edge.profile import load_profile

    profile = args.profile or "starter"
    d = Path(args.engines_root) / load_profile(profile).name / args.target
    return [(_default_label(d), str(d), profile)]


def _default_label(directory: str | Path) -> str:
    """``<precision>-<target>`` from the build's manifest, the folder name when it cannot be read."""
    try:
        manifest = json.loads((Path(directory) / "manifest.json").read_text(encoding="utf-8"))
        return f"{manifest['precision']}-{manifest['target']}"
    except (OSError, ValueError, KeyError):
        return str(directory)


def _synth_clip(folder: Path) -> Path:
    from edge.testmedia import make_clip, synth_speech

    wav = synth_speech("I am so happy to see you again, this is wonderful news.", folder / "speech.wav")
    return make_clip(folder / "speech.mp4", audio_wav=wav, seconds=4.0, fps=25.0)


def _pipeline(args: argparse.Namespace) -> int:
    import tempfile

    from edge.bench.pipeline import bench_pipeline, to_markdown

    def save(result: dict[str, Any]) -> None:
        _write(args.json, json.dumps(result, indent=2, default=str) + "\n")

    with tempfile.TemporaryDirectory(prefix="edge-bench-clip-") as tmp:
        clip = args.clip or default_clip() or _synth_clip(Path(tmp))
        result = bench_pipeline(clip, _pipeline_builds(args), speeds=args.speeds, repeats=args.repeats,
                                threads=args.threads, detect_every=args.detect_every, asr=args.asr, loop=args.loop,
                                fp32=args.fp32, progress=not args.no_progress, on_update=save)
    return _report(args, result, save, to_markdown)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=getattr(args, "quiet", False))
    return run_main(PROG, lambda: args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
