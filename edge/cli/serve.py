"""edge-serve: the live loop as a local WebSocket service, with a kiosk page at / (protocol: docs/protocol.md)."""

from __future__ import annotations

import argparse
import logging
import sys

from edge.cli._common import add_dataclass_flags, dataclass_overrides, run_main, setup_logging
from edge.serve.config import HELP as SERVE_HELP
from edge.serve.config import ServeConfig
from edge.stream.config import HELP as RUN_HELP
from edge.stream.config import RunConfig

log = logging.getLogger("edge")

#: Live-loop options that make no sense for a service (its sessions' media arrive over the network, at real time;
#: the per-session network threads are edge-serve's own --threads).
RUN_SKIP = ("mic", "audio", "speed", "max_seconds", "threads")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-serve",
        description="Serve live emotion recognition on this machine: a WebSocket service (/v1/stream: send camera "
                    "frames and microphone audio, receive text / audio / vision / fused estimates) and a kiosk page "
                    "at /. Sessions share the loaded networks; nothing is stored unless --record DIR.",
        epilog="Examples:\n  edge-serve                                  # then open http://127.0.0.1:8765/\n"
               "  edge-serve --host 0.0.0.0 --token \"$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')\"\n"
               "  edge-serve --camera 0                       # also /v1/estimates over this machine's camera\n"
               "Protocol: docs/protocol.md; schemas at /v1/schemas/<type>.json.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve = p.add_argument_group("service")
    serve_fields = add_dataclass_flags(serve, ServeConfig, SERVE_HELP)
    loop = p.add_argument_group("live loop (per session; --camera / --video: the server's own capture for "
                                "/v1/estimates)")
    run_fields = add_dataclass_flags(loop, RunConfig, RUN_HELP, skip=RUN_SKIP)
    p.set_defaults(_serve_fields=serve_fields, _run_fields=run_fields)
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=args.quiet)

    def body() -> int:
        from edge.serve.app import prepare, run_server
        from edge.serve.protocol import PROTOCOL

        config = ServeConfig(**dataclass_overrides(args, args._serve_fields))
        run_config = RunConfig(**dataclass_overrides(args, args._run_fields))
        service = prepare(config, run_config)

        def ready(host: str, port: int) -> None:
            shown = f"[{host}]" if ":" in host else host
            query = "?token=..." if service.token else ""
            print(f"edge-serve: listening on http://{shown}:{port}/{query} (kiosk page), ws://{shown}:{port}"
                  f"/v1/stream (protocol {PROTOCOL}); "
                  f"{'recording media to ' + str(service.record_root) if service.record_root else 'no media is stored'}"
                  f"; Ctrl-C stops", file=sys.stderr, flush=True)

        run_server(service, ready)
        return 0

    return run_main("edge-serve", body)


def config_fields() -> tuple[list[str], list[str]]:
    import dataclasses

    return ([f.name for f in dataclasses.fields(ServeConfig)],
            [f.name for f in dataclasses.fields(RunConfig) if f.name not in RUN_SKIP])


if __name__ == "__main__":
    raise SystemExit(main())
