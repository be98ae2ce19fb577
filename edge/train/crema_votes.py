"""CREMA-D's perception study as per-modality label tuples (``shared/data/crema-d-votes/summaryTable.csv``).

For each of CREMA-D's 7,442 clips (91 actors, 12 sentences, 6 acted emotions) the table gives the emotion raters
perceived from the voice alone (``VoiceVote``), the face alone (``FaceVote``) and both (``MultiModalVote``), each a
code A D F H N S (anger, disgust, fear, happiness, neutral, sadness) with the agreement level in percent, or
several codes joined by ``:`` (with their levels joined the same way) when the raters were split between them.  These are real per-modality labels of English audio-visual
clips, the kind CHERMA has for Chinese.  CREMA-D's sentences are emotionally neutral ("Don't forget a jacket"), so
a clip's *text* label is neutral.

A file name ``1001_DFA_ANG_XX`` holds the actor (1001-1091), the sentence code, the acted emotion and the
intensity (LO MD HI XX).  :func:`actor_split` assigns actors to splits so that no actor is in two of them.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import DataError, InputError
from edge.labels import INDEX, to_index

log = logging.getLogger("edge")

__all__ = ["VoteRow", "read_crema_votes", "is_crema_votes", "votes_label_table", "actor_split", "TIES"]

#: CREMA-D's vote codes -> canonical class names.
CODES = {"A": "anger", "D": "disgust", "F": "fear", "H": "happiness", "N": "neutral", "S": "sadness"}
COLUMNS = ("FileName", "VoiceVote", "VoiceLevel", "FaceVote", "FaceLevel", "MultiModalVote", "MultiModalLevel")
#: How votes with several codes enter a label table: ``drop`` the clip (the table keeps clips with one label per
#: modality), or take the ``top`` code (the highest agreement level; the first listed on equal levels).
TIES = ("drop", "top")
#: Actors held out: test 1001-1009 (the six clips of ``crema-d-samples`` are actor 1001's), valid 1010-1018.
TEST_ACTORS = range(1001, 1010)
VALID_ACTORS = range(1010, 1019)


@dataclass(frozen=True)
class VoteRow:
    file: str
    actor: int
    sentence: str
    acted: int
    intensity: str
    voice: tuple[int, ...]  # canonical class indices, highest agreement level first; several when votes split
    face: tuple[int, ...]
    multi: tuple[int, ...]
    levels: tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]  # percent per code: voice, face, multi

    @property
    def tied(self) -> bool:
        return len(self.voice) > 1 or len(self.face) > 1 or len(self.multi) > 1


def _vote(value: str, level: str, where: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """('A:F', '30.67:51.00') -> ((fear, anger), (51.0, 30.67)): codes sorted by agreement level, highest first."""
    parts = [p.strip().upper() for p in (value or "").split(":")]
    if not parts or any(p not in CODES for p in parts):
        raise DataError(f"{where}: vote {value!r} is not one or more of the codes {' '.join(CODES)} joined by ':'")
    try:
        levels = [float(v) for v in (level or "").split(":")]
    except ValueError:
        raise DataError(f"{where}: agreement level {level!r} is not a number per code joined by ':'") from None
    if len(levels) == 1 and len(parts) > 1:
        levels = levels * len(parts)  # one level for a tie
    if len(levels) != len(parts):
        raise DataError(f"{where}: vote {value!r} has {len(parts)} code(s) but level {level!r} has {len(levels)}")
    order = sorted(range(len(parts)), key=lambda i: -levels[i])  # stable: the first listed wins on equal levels
    return tuple(INDEX[CODES[parts[i]]] for i in order), tuple(levels[i] for i in order)


def is_crema_votes(path: str | Path) -> bool:
    """Whether ``path`` is a CSV file whose header is that of CREMA-D's summaryTable.csv."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return all(c in header for c in COLUMNS)


def read_crema_votes(path: str | Path) -> list[VoteRow]:
    """Every row of summaryTable.csv; :class:`DataError` naming the line for a malformed one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; expected CREMA-D's summaryTable.csv (shared/data/crema-d-votes/)")
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; expected CREMA-D's summaryTable.csv "
                            f"with columns {', '.join(COLUMNS)}")
        for record in reader:
            where = f"{path}:{reader.line_num}"
            name = (record["FileName"] or "").strip()
            parts = name.split("_")
            if len(parts) != 4 or not parts[0].isdigit():
                raise DataError(f"{where}: file name {name!r} is not ACTOR_SENTENCE_EMOTION_LEVEL (e.g. 1001_DFA_ANG_XX)")
            try:
                acted = to_index(parts[2], "crema-d", source=where)
            except InputError as exc:
                raise DataError(str(exc)) from None
            votes = [_vote(record[f"{kind}Vote"], record[f"{kind}Level"], where) for kind in ("Voice", "Face", "MultiModal")]
            rows.append(VoteRow(name, int(parts[0]), parts[1], acted, parts[3], votes[0][0], votes[1][0], votes[2][0],
                                (votes[0][1], votes[1][1], votes[2][1])))
    if not rows:
        raise DataError(f"{path}: no data rows below the header")
    return rows


def actor_split(actor: int) -> str:
    """``test`` for actors 1001-1009, ``valid`` for 1010-1018, ``train`` for the others."""
    if actor in TEST_ACTORS:
        return "test"
    return "valid" if actor in VALID_ACTORS else "train"


def votes_label_table(path: str | Path, *, ties: str = "drop", split: str | None = None):
    """summaryTable.csv as a :class:`~edge.train.tables.LabelTable` with columns t, a, v, m (text neutral, then
    the voice, face and multimodal votes); ``split`` keeps the actors of :func:`actor_split`'s split."""
    from edge.train.tables import LABEL_COLUMNS, LabelTable

    if ties not in TIES:
        raise InputError(f"ties {ties!r}: expected one of {', '.join(TIES)}")
    rows = read_crema_votes(path)
    if split is not None:
        if split not in ("train", "valid", "test"):
            raise InputError(f"CREMA-D votes have splits train, valid and test (by actor), not {split!r}")
        rows = [r for r in rows if actor_split(r.actor) == split]
    kept = [r for r in rows if ties == "top" or not r.tied]
    if len(kept) < len(rows):
        log.info("%s: %d of %d clips have votes split between codes and are left out (ties=drop)", path, len(rows) - len(kept), len(rows))
    neutral = INDEX["neutral"]
    labels = np.asarray([[neutral, r.voice[0], r.face[0], r.multi[0]] for r in kept], np.int64).reshape(-1, 4)
    return LabelTable(path=Path(path), columns=LABEL_COLUMNS, ids=[r.file for r in kept],
                      splits=[actor_split(r.actor) for r in kept], texts=[""] * len(kept), labels=labels)
