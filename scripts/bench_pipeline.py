#!/usr/bin/env python
"""Benchmark the whole live loop on a replayed clip: ``edge-bench pipeline`` as a script.

    python scripts/bench_pipeline.py --engines int8=engines/paper/cpu --loop 4 --threads 2 --markdown bench-pipeline.md

Takes the flags of ``edge-bench pipeline`` (see ``--help``): per build, replay speed (realtime, max) and
face-detection interval, the real-time factor and each stage's compute per media second, end-to-end latency
p50 / p95 / p99, CPU use, peak memory, dropped frames and lost audio. Writes the JSON (updated after every run, so a
crash keeps what was measured) and, with ``--markdown``, the table.
"""

from __future__ import annotations

import sys

from edge.cli.bench import main

if __name__ == "__main__":
    raise SystemExit(main(["pipeline", *sys.argv[1:]]))
