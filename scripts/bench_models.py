#!/usr/bin/env python
"""Benchmark every network of a build against PyTorch eager FP32: ``edge-bench models`` as a script.

    python scripts/bench_models.py --engines engines/paper/cpu --batches 1,4 --threads 2 --markdown bench-models.md

Takes the flags of ``edge-bench models`` (see ``--help``) and writes the JSON (updated after every network, so a
crash keeps what was measured) and, with ``--markdown``, the table.
"""

from __future__ import annotations

import sys

from edge.cli.bench import main

if __name__ == "__main__":
    raise SystemExit(main(["models", *sys.argv[1:]]))
