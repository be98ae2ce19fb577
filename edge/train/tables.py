"""Reader of label-only tables: one row per utterance with its uni-modal and multi-modal labels.

The layout is that of ``shared/data/emotiontalk/emotiontalk.csv``::

    id,split,text,label_text,label_audio,label_vision,label_multimodal

read with the ``csv`` module (texts are quoted and may hold commas, quotes and new lines).  ``id`` and the
label columns are required; ``split`` and ``text`` are optional (empty strings when absent).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from edge.errors import DataError, InputError
from edge.labels import VOCABULARIES, to_index

log = logging.getLogger("edge")

__all__ = ["LabelTable", "read_label_table", "LABEL_COLUMNS"]

#: Label columns in head order t, a, v, m.
LABEL_COLUMNS: tuple[str, ...] = ("label_text", "label_audio", "label_vision", "label_multimodal")


@dataclass(frozen=True)
class LabelTable:
    """Rows of a label table; ``labels[i, j]`` is the canonical class index of row i in ``columns[j]``."""

    path: Path
    columns: tuple[str, ...]
    ids: list[str]
    splits: list[str]
    texts: list[str]
    labels: np.ndarray  # (N, len(columns)) int64

    def __len__(self) -> int:
        return len(self.ids)

    def split_counts(self) -> dict[str, int]:
        """Number of rows per split, in order of first appearance."""
        return dict(Counter(self.splits))


def _wanted_splits(split: str | Iterable[str] | None) -> set[str] | None:
    if split is None:
        return None
    if isinstance(split, str):
        return {split}
    wanted = {str(s) for s in split}
    if not wanted:
        raise InputError("split must be a split name, a non-empty list of split names, or None for all rows")
    return wanted


def read_label_table(
    path: str | Path,
    *,
    columns: Iterable[str] = LABEL_COLUMNS,
    vocabulary: str = "canonical",
    split: str | Iterable[str] | None = None,
) -> LabelTable:
    """Read a CSV label table, keeping the rows of ``split`` (a name, several names, or None for all).

    Labels of every column in ``columns`` are mapped to canonical class indices with ``vocabulary``
    (see :mod:`edge.labels`).  Raises :class:`DataError` for a missing or unreadable file, missing columns,
    malformed rows, unknown labels or an empty result, and :class:`InputError` for bad arguments.
    """
    path = Path(path)
    columns = tuple(columns)
    if not columns:
        raise InputError("columns must name at least one label column")
    if vocabulary not in VOCABULARIES:
        raise InputError(f"unknown label vocabulary {vocabulary!r}; available vocabularies: {', '.join(VOCABULARIES)}")
    wanted = _wanted_splits(split)
    expected = ", ".join(("id",) + columns)
    if not path.exists():
        raise DataError(f"{path}: file not found; expected a CSV label table with columns {expected}")
    if not path.is_file():
        raise DataError(f"{path}: not a file; expected a CSV label table with columns {expected}")

    ids: list[str] = []
    splits: list[str] = []
    texts: list[str] = []
    rows: list[list[int]] = []
    seen_splits: Counter[str] = Counter()
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames
            if not header:
                raise DataError(f"{path}: the file is empty; expected a CSV header with columns {expected}")
            missing = [c for c in ("id",) + columns if c not in header]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {', '.join(missing)}; the file has columns {', '.join(header)}"
                )
            has_split = "split" in header
            if wanted is not None and not has_split:
                raise DataError(
                    f"{path}: cannot select split {', '.join(sorted(wanted))}: the file has no 'split' column"
                    f" (columns: {', '.join(header)})"
                )
            for record in reader:
                line = reader.line_num
                if None in record or any(v is None for v in record.values()):
                    got = sum(v is not None for k, v in record.items() if k is not None) + len(record.get(None) or [])
                    raise DataError(
                        f"{path}:{line}: expected {len(header)} comma-separated fields as in the header, got {got}"
                    )
                row_split = record["split"].strip() if has_split else ""
                seen_splits[row_split] += 1
                if wanted is not None and row_split not in wanted:
                    continue
                try:
                    rows.append(
                        [to_index(record[c], vocabulary, source=f"{path}:{line} column {c}") for c in columns]
                    )
                except DataError:
                    raise
                except InputError as exc:
                    raise DataError(str(exc)) from None
                ids.append(record["id"])
                splits.append(row_split)
                texts.append(record.get("text") or "")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 text ({exc}); expected a UTF-8 CSV label table") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc}); expected a CSV label table with columns {expected}") from None

    if not rows:
        if wanted is not None and seen_splits:
            available = ", ".join(f"{s or '(empty)'} ({n} rows)" for s, n in seen_splits.items())
            raise DataError(
                f"{path}: no rows in split {', '.join(sorted(wanted))}; the splits in the file are: {available}"
            )
        raise DataError(f"{path}: no data rows; expected at least one row below the header")
    dupes = len(ids) - len(set(ids))
    if dupes:
        log.warning("%s: %d duplicate id(s) among %d rows", path, dupes, len(ids))
    log.info("read %d labelled rows from %s", len(ids), path)
    return LabelTable(
        path=path,
        columns=columns,
        ids=ids,
        splits=splits,
        texts=texts,
        labels=np.asarray(rows, dtype=np.int64).reshape(len(rows), len(columns)),
    )
