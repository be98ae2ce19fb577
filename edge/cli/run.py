"""edge-run: live multimodal emotion recognition from a camera and microphone, or a replayed file."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading

from edge.cli._common import add_dataclass_flags, dataclass_overrides, run_main, setup_logging
from edge.errors import InputError
from edge.stream.config import HELP, RunConfig

log = logging.getLogger("edge")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-run",
        description="Capture webcam frames and microphone audio (or replay a file), recognise speech, and emit "
                    "rolling per-modality (text, audio, vision) and fused emotion estimates with LFMIM.",
        epilog="Examples:\n  edge-run --camera 0\n  edge-run --demo        # a clip made here: a face photo, animated, with "
               "synthesised speech\n  edge-run --video clip.mp4 --jsonl -\n"
               "  edge-run --video clip.mp4 --speed max --jsonl out.jsonl --no-view\n  edge-run --list-devices\n"
               "  edge-run --check         # is this machine ready? (a kiosk installer's check)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fields = add_dataclass_flags(p, RunConfig, HELP)
    p.set_defaults(_fields=fields)
    out = p.add_argument_group("output")
    out.add_argument("--jsonl", default=None, help="write one JSON object per estimate to FILE, or - for stdout")
    out.add_argument("--show", action="store_true", help="overlay window: face box, bars, transcript")
    out.add_argument("--no-view", action="store_true", help="no live terminal view")
    out.add_argument("--summary-json", default=None, help="also write the end-of-run summary to FILE")
    p.add_argument("--demo", action="store_true",
                   help="replay the demo clip (made on first use from a face photograph shipped in the package, gently "
                        "animated, with speech from espeak-ng; cached): no camera, no downloads")
    p.add_argument("--list-devices", action="store_true", help="list microphones and exit")
    p.add_argument("--check", action="store_true",
                   help="health check (what a kiosk installer runs): open or prepare the build, run every network "
                        "once on the demo material, list capture devices, backends and CPU features; one verdict "
                        "per line; exit status 1 when anything this run needs is missing")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet)

    def body() -> int:
        if args.list_devices:
            from edge.stream.microphone import list_devices

            print(list_devices())
            return 0
        from edge.stream.config import OptionsError

        overrides = dataclass_overrides(args, args._fields)
        if args.demo and any(overrides.get(k) for k in ("camera", "video", "audio")):
            raise InputError("--demo replays the demo clip; drop --camera / --video / --audio, or drop --demo")
        try:  # every option is checked before anything heavy starts, and every mistake is named
            config = RunConfig(**{**overrides, **({"video": "demo.mp4"} if args.demo else {})})
        except OptionsError as exc:
            for mistake in exc.mistakes:
                print(f"edge-run: error: {mistake}", file=sys.stderr)
            return 2
        from edge.profile import load_profile

        load_profile(config.profile)  # an unknown profile fails here, in one line
        if args.check:
            from edge.stream.health import format_checks, run_checks

            if args.demo:  # the demo replay needs no camera; the clip itself is one of the checks
                from edge.demo import make_demo_clip

                config = config.replace(video=str(make_demo_clip()))
            checks = run_checks(config)
            print(format_checks(checks))
            return 1 if any(c.verdict == "FAIL" for c in checks) else 0
        from edge.stream.first_run import ensure_build
        from edge.stream.recognizer import Recognizer, check_sources

        if args.demo:
            from edge.demo import make_demo_clip

            config = config.replace(video=str(make_demo_clip()))
            log.info("demo clip: %s", config.video)
        check_sources(config)
        sinks = []
        if args.jsonl:
            from edge.sinks.jsonl import JsonlSink

            sinks.append(JsonlSink(args.jsonl))
        if not args.no_view and args.jsonl != "-":
            from edge.sinks.terminal import TerminalView

            sinks.append(TerminalView())
        recognizer = Recognizer(config)
        recognizer.preflight()
        if not config.engines:  # the first run builds here, where Ctrl-C stops it at once (nothing half-written)
            ensure_build(config.profile, target=config.target, root=config.engines_root,
                         random_weights=config.random_weights, threads=config.threads or None)
        stopping = threading.Event()

        def interrupt(signum, frame):  # Ctrl-C: stop cleanly, flush every sink, print the summary
            stopping.set()

        previous = signal.signal(signal.SIGINT, interrupt) if threading.current_thread() is threading.main_thread() else None
        try:
            for sink in sinks:
                if hasattr(sink, "error"):
                    recognizer.on_error(sink.error)
            recognizer.start()
            if args.show:
                from edge.sinks.overlay import OverlayWindow

                sinks.append(OverlayWindow(lambda: (recognizer.vision.latest_frame, recognizer.vision.latest_box),
                                           on_quit=stopping.set))
            for sink in sinks:
                recognizer.on_estimate(sink)
            while not recognizer.wait(0.1):
                if stopping.is_set():
                    break
        finally:
            recognizer.stop()
            for sink in sinks:
                sink.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        summary = recognizer.summary()
        text = json.dumps({"summary": summary}, ensure_ascii=False)
        if args.summary_json:
            from edge.fileio import write_text_atomic

            write_text_atomic(args.summary_json, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        print(text, file=sys.stderr)
        for error in summary["errors"]:
            print(f"edge-run: {error}", file=sys.stderr)
        return 1 if summary["errors"] else 0

    return run_main("edge-run", body)


def config_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig)]


if __name__ == "__main__":
    raise SystemExit(main())
