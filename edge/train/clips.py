"""Labelled clips for ``edge-extract``: the clip manifest reader and the per-clip feature extraction.

A clip manifest is a CSV file with a header row::

    path,id,split,transcript,label
    1001_DFA_ANG_XX.mp4,1001_DFA_ANG_XX,train,Don't forget a jacket,anger

``path`` (required) is a media file: a video with an audio track, an audio file, or a video without sound;
relative paths start at the media root (by default the manifest's folder).  ``id`` defaults to the path,
``split`` to ``train``, ``transcript`` to ''.  Labels are ``label_text``, ``label_audio``, ``label_vision`` and
``label_multimodal``, or one ``label`` that fills every modality the per-modality columns leave empty; an empty
or absent label is stored as -1 ("no label").  Label names are read in one vocabulary of :mod:`edge.labels`.

Features come from :class:`edge.features.extractors.Extractors`, the run path's preprocessing and runners, so
training features equal deployment features.  Speech recognition arrives with the live loop; until then the
text modality is the manifest's transcript (an empty one gives the tokenizer's empty sequence).
"""

from __future__ import annotations

import csv
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import DataError, InputError
from edge.labels import to_index

log = logging.getLogger("edge")

#: Label columns, in the store's label order (text, audio, vision, multimodal).
LABEL_COLUMNS = ("label_text", "label_audio", "label_vision", "label_multimodal")
#: The single column that fills every modality's label.
LABEL_ALL = "label"
DEFAULT_SPLIT = "train"
#: Decoded video frames kept in memory at once; a longer clip is decoded twice (count, then keep the picks).
FRAME_BUDGET_BYTES = 512 * 2**20
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Clip:
    """One manifest row: where the media is and what to store it as."""

    id: str
    path: Path
    split: str
    transcript: str
    labels: tuple[int, int, int, int]  # t, a, v, m class indices; -1 = no label
    source: str  # "manifest.csv:LINE", for messages


@dataclass(frozen=True)
class ClipFeatures:
    """A clip's features as the run path computes them, and what was found in it."""

    text: np.ndarray  # (tokens, dim)
    audio: np.ndarray  # (frames, dim)
    vision: np.ndarray  # (segments * per_segment, dim); zero rows where no face was found
    has_audio: bool
    has_video: bool
    faces: int  # sampled frames with a face
    sampled: int  # frames sampled for vision (0 without video)
    audio_seconds: float
    frames: int  # video frames decoded at the profile's rate


def _cell(row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    return value.strip() if isinstance(value, str) else ""


def _labels(row: dict[str, Any], columns: Sequence[str], vocabulary: str, where: str) -> tuple[int, int, int, int]:
    shared = _cell(row, LABEL_ALL) if LABEL_ALL in columns else ""
    out = []
    for name in LABEL_COLUMNS:
        value = _cell(row, name) if name in columns else ""
        value = value or shared
        out.append(to_index(value, vocabulary, source=where) if value else -1)
    return out[0], out[1], out[2], out[3]


def read_clip_manifest(path: str | Path, *, vocabulary: str = "canonical", media_root: str | Path | None = None,
                       split_column: str = "split") -> list[Clip]:
    """Read a clip manifest (see the module docstring) into :class:`Clip` records, in file order.

    Raises :class:`DataError` naming the file (and line) for a missing or empty manifest, a missing ``path``
    column, an empty path, a bad split name or a duplicate id, and :class:`InputError` for an unknown label.
    Whether the media files exist is not checked here (:func:`missing_media` does).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"clip manifest not found: {str(p)!r}" + (" (it is a folder)" if p.is_dir() else ""))
    root = Path(media_root) if media_root is not None else p.parent
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            if not columns:
                raise DataError(f"{p}: the clip manifest is empty; it needs a header row with at least a 'path' column")
            reader.fieldnames = columns
            if "path" not in columns:
                raise DataError(f"{p}:1: the clip manifest has no 'path' column; columns found: {', '.join(columns)}")
            if not any(c in columns for c in (*LABEL_COLUMNS, LABEL_ALL)):
                log.warning("%s: no label column (%s or %s); every label is stored as -1", p,
                            ", ".join(LABEL_COLUMNS), LABEL_ALL)
            clips: list[Clip] = []
            first_line: dict[str, int] = {}
            for row in reader:
                line = reader.line_num
                where = f"{p}:{line}"
                if not any(_cell(row, c) for c in columns):
                    continue  # a blank line
                media = _cell(row, "path")
                if not media:
                    raise DataError(f"{where}: the 'path' cell is empty")
                clip_id = _cell(row, "id") or media
                if clip_id in first_line:
                    raise DataError(f"{where}: duplicate id {clip_id!r} (first at line {first_line[clip_id]}); "
                                    "every clip needs its own id")
                first_line[clip_id] = line
                split = _cell(row, split_column) or DEFAULT_SPLIT
                if not _SPLIT_NAME.match(split):
                    raise DataError(f"{where}: invalid split name {split!r}; use letters, digits, '.', '-' or '_'")
                labels = _labels(row, columns, vocabulary, where)
                media_path = Path(media)
                clips.append(Clip(clip_id, media_path if media_path.is_absolute() else root / media_path, split,
                                  _cell(row, "transcript"), labels, where))
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text ({exc}); save the manifest as UTF-8 CSV") from None
    except csv.Error as exc:
        raise DataError(f"{p}: not a valid CSV file ({exc})") from None
    if not clips:
        raise DataError(f"{p}: the clip manifest lists no clips (only a header row)")
    if split_column not in columns:
        log.info("%s: no %r column; every clip goes to split %r", p, split_column, DEFAULT_SPLIT)
    return clips


def missing_media(clips: Sequence[Clip]) -> list[Clip]:
    """The clips whose media file does not exist."""
    return [c for c in clips if not c.path.is_file()]


class _PickedFrames(Sequence):
    """A clip's frames of which only the sampled ones are kept (the rest are never asked for)."""

    def __init__(self, count: int, kept: dict[int, np.ndarray]) -> None:
        self._count, self._kept = count, kept

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: Any) -> np.ndarray:
        if index not in self._kept:
            raise IndexError(f"frame {index} was not kept (only the sampled frames are)")
        return self._kept[index]


def read_clip_frames(path: Path, *, fps: float, segments: int, per_segment: int,
                     budget_bytes: int = FRAME_BUDGET_BYTES) -> Sequence[np.ndarray]:
    """The RGB frames of a video resampled to ``fps`` (the live loop's rate), as :meth:`Extractors.vision` takes.

    Short clips are decoded once and kept whole; a clip whose frames would exceed ``budget_bytes`` is decoded
    twice (count, then keep only the frames the segment sampling picks): the same features, bounded memory.
    """
    from edge.features.vision_pre import sample_frames
    from edge.video import VideoFileReader

    reader = VideoFileReader(path, fps=fps)
    width, height = reader.size
    expected = (reader.duration * min(fps, reader.fps or fps) + 1) * max(width * height * 3, 1)
    if expected <= budget_bytes:
        return [frame for _, frame in reader]
    count = sum(1 for _ in reader)
    picks = set(sample_frames(max(count, 1), segments, per_segment).tolist())
    kept = {i: frame for i, (_, frame) in enumerate(reader) if i in picks}
    log.debug("%s: %d frames at %g fps; kept the %d sampled ones", path, count, fps, len(kept))
    return _PickedFrames(count, kept)


def extract_clip(extractors: Any, clip: Clip) -> ClipFeatures:
    """Decode ``clip`` and compute its features with ``extractors`` (an :class:`Extractors`).

    A video without sound gets zero audio features and an audio file zero vision features (``has_audio`` /
    ``has_video`` say which); a missing, unreadable or truncated file, or one with neither stream, raises
    :class:`InputError`.
    """
    from edge.media import probe, read_audio

    if not clip.path.is_file():
        raise InputError(f"media file not found: {str(clip.path)!r}")
    info = probe(clip.path)
    if not info["has_audio"] and not info["has_video"]:
        raise InputError(f"{str(clip.path)!r} has neither an audio nor a video stream")
    profile = extractors.profile
    v, a = profile.vision, profile.audio
    vision, faces, sampled, frames = np.zeros((v.frames, v.dim), np.float32), 0, 0, 0
    if info["has_video"]:
        clip_frames = read_clip_frames(clip.path, fps=v.fps, segments=v.segments, per_segment=v.per_segment)
        frames = len(clip_frames)
        vision, faces = extractors.vision(clip_frames)
        sampled = v.frames
    audio, seconds = np.zeros((a.frames, a.dim), np.float32), 0.0
    if info["has_audio"]:
        samples, rate = read_audio(clip.path, sample_rate=a.sample_rate)
        audio, seconds = extractors.audio(samples), samples.size / rate
    text = extractors.text([clip.transcript])[0]
    return ClipFeatures(text, audio, vision, info["has_audio"], info["has_video"], faces, sampled, seconds, frames)


def timed_extract(extractors: Any, clip: Clip) -> tuple[ClipFeatures, float]:
    """:func:`extract_clip` and the seconds it took."""
    started = time.perf_counter()
    features = extract_clip(extractors, clip)
    return features, time.perf_counter() - started


__all__ = ["Clip", "ClipFeatures", "LABEL_COLUMNS", "extract_clip", "missing_media", "read_clip_frames",
           "read_clip_manifest", "timed_extract"]
