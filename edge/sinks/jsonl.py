"""JSON Lines sink: one object per estimate, flushed per line (``-`` writes to standard output), and one
``{"type": "error", ...}`` object per failure of a part of the loop (:meth:`JsonlSink.error`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

from edge.errors import InputError
from edge.stream.estimate import Estimate


class JsonlSink:
    name = "jsonl"

    def __init__(self, target: str) -> None:
        self.target = target
        if target == "-":
            self._fh: IO[str] = sys.stdout
            self._owns = False
        else:
            path = Path(target)
            if path.parent and not path.parent.exists():
                raise InputError(f"--jsonl {target}: folder {path.parent} does not exist")
            self._fh = open(path, "a", encoding="utf-8")
            self._owns = True
        self.lines = 0

    def __call__(self, estimate: Estimate) -> None:
        self.write(estimate.to_dict())

    def error(self, failure: Any) -> None:
        """Record a :class:`edge.stream.failures.Failure` in the stream."""
        self.write(failure.to_dict())

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        self.lines += 1

    def close(self) -> None:
        self._fh.flush()
        if self._owns:
            self._fh.close()
