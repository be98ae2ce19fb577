#!/usr/bin/env python
"""Load and soak of edge-serve with browser-like Python clients over real sockets (JSON out).

    python scripts/bench_serve.py load --sessions 1,2,3,4 --loops 2 --json bench-serve-load.json
    nice -n 15 python scripts/bench_serve.py soak --minutes 30 --sessions 2 --json bench-serve-soak.json

The server runs as its own process (``edge-serve --port 0``, the arguments after ``--`` go to it), so its resident
memory is its own. ``load``: for each N, N sessions replay the demo clip at real time; p50 / p95 of the server's
end-to-end latency and of the delay the clients see; N passes when both p95 lie within one fusion period.
``soak``: sessions replay the clip as fast as the server takes it, one after another, for ``--minutes``; the server's
RSS is sampled every 10 s (start = after the first session, end = the last sample). The machine's load average is
recorded beside every figure: the CPU may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from edge.bench.serve_load import load_average, load_clip, percentile, rss_mb, run_sessions
from edge.bench.system import cpu_model


def start_server(extra: list[str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli.serve", "--port", "0", "-q", *extra],
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"listening on http://[^:]+:(\d+)/", line)
        if m:
            return proc, int(m.group(1))
        sys.stderr.write(line)
    raise SystemExit(f"edge-serve did not start (exit {proc.wait()})")


def write(path: str, record: dict) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def load(args, url: str, clip, record: dict) -> None:
    period_ms = 1000.0 / args.rate
    record["runs"] = []
    for n in args.sessions:
        before = load_average()
        reports = asyncio.run(run_sessions(url, clip, n, loops=args.loops, realtime=True, skip_results=2))
        e2e = [v for r in reports for v in r.end_to_end_ms]
        delay = [v for r in reports for v in r.client_delay_ms]
        run = {"sessions": n, "load_before": before, "load_after": load_average(),
               "end_to_end_ms": {"p50": percentile(e2e, 50), "p95": percentile(e2e, 95)},
               "client_delay_ms": {"p50": percentile(delay, 50), "p95": percentile(delay, 95)},
               "results": [r.results for r in reports], "all_three": [r.all_three for r in reports],
               "dropped_results": [r.closed["stats"]["results_dropped"] if r.closed else None for r in reports],
               "failures": [r.failure for r in reports if r.failure]}
        run["within_period"] = bool(e2e and delay and not run["failures"] and run["end_to_end_ms"]["p95"] <= period_ms
                                    and run["client_delay_ms"]["p95"] <= period_ms)
        record["runs"].append(run)
        print(json.dumps(run), flush=True)
        write(args.json, record)
    passing = [r["sessions"] for r in record["runs"] if r["within_period"]]
    record["largest_n_within_period"] = max(passing) if passing else 0
    record["fusion_period_ms"] = period_ms


def soak(args, url: str, clip, record: dict, pid: int) -> None:
    samples, sessions, results = [], 0, 0
    end = time.monotonic() + 60 * args.minutes
    last = 0.0
    while time.monotonic() < end:
        reports = asyncio.run(run_sessions(url, clip, args.sessions[0], loops=1, realtime=False))
        sessions += len(reports)
        results += sum(r.results for r in reports)
        failures = [r.failure for r in reports if r.failure]
        if failures:
            record.setdefault("failures", []).extend(failures)
        if time.monotonic() - last >= 10 or not samples:
            last = time.monotonic()
            samples.append({"t_s": round(60 * args.minutes - (end - last), 1), "rss_mb": round(rss_mb(pid), 1),
                            "load": load_average(), "sessions": sessions})
            record.update(samples=samples, sessions=sessions, results=results)
            write(args.json, record)
    start, stop = samples[0]["rss_mb"], samples[-1]["rss_mb"]
    record.update(rss_start_mb=start, rss_end_mb=stop, rss_change=round((stop - start) / start, 4),
                  flat_within_10_percent=abs(stop - start) <= 0.1 * start)
    print(json.dumps({k: record[k] for k in ("sessions", "results", "rss_start_mb", "rss_end_mb", "rss_change")}))


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("load", "soak"))
    p.add_argument("--sessions", default="1,2,3,4", type=lambda s: [int(v) for v in s.split(",")],
                   help="load: the N to try; soak: concurrent sessions (the first value)")
    p.add_argument("--loops", type=int, default=2, help="load: plays of the clip per session")
    p.add_argument("--minutes", type=float, default=30.0, help="soak: duration")
    p.add_argument("--rate", type=float, default=2.0, help="the profile's fusion rate (Hz): the latency budget")
    p.add_argument("--clip", default=None, help="a video with speech (default: the demo clip)")
    p.add_argument("--json", default=None, help="output (default: bench-serve-<mode>.json)")
    args = p.parse_args(argv)
    args.json = args.json or f"bench-serve-{args.mode}.json"
    from edge.demo import make_demo_clip

    clip = load_clip(args.clip or make_demo_clip(), fps=8)
    proc, port = start_server(extra)
    url = f"ws://127.0.0.1:{port}/v1/stream"
    record = {"mode": args.mode, "machine": f"{os.cpu_count()} cores, {cpu_model()}", "server_args": extra,
              "clip_seconds": clip.duration, "started_unix": time.time(), "load_at_start": load_average()}
    try:
        if args.mode == "load":
            load(args, url, clip, record)
        else:
            soak(args, url, clip, record, proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        record["load_at_end"] = load_average()
        write(args.json, record)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
