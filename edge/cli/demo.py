"""edge-demo: make a short demo clip (a real face, synthetic speech) for the live loop on any machine."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from edge.cli._common import run_main, setup_logging

log = logging.getLogger("edge")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-demo",
        description="Make a ~10 s demo clip from material already on this machine: the Grace Hopper portrait that "
                    "the package ships (public domain), gently animated (slow zoom and pan, a slight tilt), and a few "
                    "short English sentences with clear emotion content spoken by espeak-ng; ffmpeg muxes them into an H.264 + "
                    "AAC mp4. Prints the clip's path; play it through the live loop with edge-run --video PATH. "
                    "Needs the espeak-ng and ffmpeg programs (sudo apt-get install espeak-ng ffmpeg).",
        epilog="Examples:\n  edge-demo\n  edge-run --video \"$(edge-demo)\" --jsonl -\n"
               "  edge-demo demo.mp4 --overwrite --text \"What a lovely day!\" --text \"Leave me alone.\"",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", nargs="?", default=None, metavar="OUT",
                   help="where to write the clip (default: a cache file under $LFMIM_EDGE_CACHE or "
                        "~/.cache/lfmim-edge, reused when it exists)")
    p.add_argument("--overwrite", action="store_true", help="make the clip again even if OUT or the cached clip "
                                                             "exists")
    p.add_argument("--text", action="append", default=None, metavar="SENTENCE",
                   help="a sentence to speak instead of the default script; repeat the flag for several (spoken in "
                        "order, with pauses between)")
    p.add_argument("--seed", type=int, default=0, help="varies the camera motion (default: 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="print the clip's path and nothing else")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet)

    def body() -> int:
        from edge.demo import DEFAULT_SCRIPT, describe, make_demo_clip

        sentences = tuple(args.text) if args.text else DEFAULT_SCRIPT
        path = make_demo_clip(args.out, sentences=sentences, seed=args.seed, overwrite=args.overwrite)
        print(path)
        if not args.quiet:  # stdout carries the path alone, so "$(edge-demo)" works in a shell
            info = describe(path)
            print(f"{info['seconds']:.1f} s, {info['width']}x{info['height']} at {info['fps']:g} fps, "
                  f"{len(sentences)} sentences: {' '.join(sentences)}", file=sys.stderr)
            print(f"play it through the live loop: edge-run --video {shlex.quote(str(path))}", file=sys.stderr)
        return 0

    return run_main("edge-demo", body)


if __name__ == "__main__":
    raise SystemExit(main())
