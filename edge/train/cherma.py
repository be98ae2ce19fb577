"""Reader of the CHERMA feature release, and its conversion into a feature store.

Layout of a CHERMA root (as the authors' loader reads it)::

    ROOT/train.json  ROOT/valid.json (or dev.json / val.json)  ROOT/test.json
    ROOT/text/<split>/<stem>.npy          (80, 768)  BERT-base token features of the utterance
    ROOT/audio/<split>/<stem>.npy         (T, 768)   wav2vec features, T varies with the clip
    ROOT/visual/<split>/<stem>.mp4.npy    (64, 512)  ResNet18 face features

``<split>`` is the stem of the split's JSON file, ``<stem>`` the ``audio_file`` of the entry without ``.wav``.
Feature folders without the ``<split>`` level, and vision files named after the stem of ``video_file``, are
accepted too.  Each JSON file is a list (or an object keyed by sample) of entries carrying ``audio_file``,
``video_file`` and the four labels ``txt_label``, ``audio_label``, ``visual_label`` and ``video_label`` (the
multimodal label), in CHERMA's Chinese names 愤怒 厌恶 恐惧 高兴 平静 悲伤 惊奇.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from edge.config import MODALITIES, LFMIMConfig
from edge.errors import DataError, InputError
from edge.labels import VOCABULARIES, to_index
from edge.train.store import FeatureStore
from edge.train.store_writer import FeatureStoreWriter, resolve_specs

log = logging.getLogger("edge")

#: Split name -> accepted JSON file names, in order of preference.
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.json",),
    "valid": ("valid.json", "dev.json", "val.json"),
    "test": ("test.json",),
}
#: Entry fields of the four labels, in the store's column order t, a, v, m.
LABEL_FIELDS = ("txt_label", "audio_label", "visual_label", "video_label")
REQUIRED_FIELDS = ("audio_file", "video_file", *LABEL_FIELDS)
#: Store modality -> CHERMA feature folder.
FEATURE_DIRS = {"text": "text", "audio": "audio", "vision": "visual"}


@dataclass(frozen=True)
class CHERMAEntry:
    """One sample of a CHERMA split file."""

    id: str  # audio_file without ".wav": the name of the text and audio feature files
    audio_file: str
    video_file: str
    labels: tuple[str, str, str, str]  # CHERMA names of the t, a, v, m labels
    targets: tuple[int, int, int, int]  # their canonical class indices
    source: str  # "<file> entry <key>", for error messages


def split_file(root: str | Path, split: str) -> Path:
    """The JSON file of ``split`` under ``root``; a DataError lists the JSON files present otherwise."""
    root = Path(root)
    family = next((files for files in SPLIT_FILES.values() if f"{split}.json" in files), ())
    names = tuple(dict.fromkeys((f"{split}.json", *family)))
    for name in names:
        if (root / name).is_file():
            return root / name
    if not root.is_dir():
        raise DataError(f"{root}: CHERMA root folder not found")
    found = sorted(p.name for p in root.glob("*.json")) or ["no .json files"]
    raise DataError(f"{root}: no split file for {split!r} (looked for {', '.join(names)}); found: {', '.join(found)}")


def available_splits(root: str | Path) -> list[str]:
    """Canonical names of the splits whose JSON file exists under ``root`` (train, valid, test order)."""
    return [s for s, files in SPLIT_FILES.items() if any((Path(root) / f).is_file() for f in files)]


def read_cherma(root: str | Path, split: str) -> list[CHERMAEntry]:
    """Parse and validate one split file: required fields, known labels, unique sample ids."""
    path = split_file(root, split)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict):
        items: list[tuple[Any, Any]] = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    else:
        raise DataError(f"{path}: expected a list of entries or an object keyed by sample, got {type(data).__name__}")
    if not items:
        raise DataError(f"{path}: split {split!r} has no entries")
    entries, seen = [], {}
    for key, raw in items:
        source = f"{path} entry {key}"
        if not isinstance(raw, dict):
            raise DataError(f"{source}: expected an object with {', '.join(REQUIRED_FIELDS)}, got {raw!r:.80}")
        missing = [f for f in REQUIRED_FIELDS if not isinstance(raw.get(f), str) or not raw.get(f).strip()]
        if missing:
            raise DataError(f"{source}: missing or empty field(s) {', '.join(missing)}")
        audio_file = raw["audio_file"].strip().replace("\\", "/")
        sample_id = audio_file[:-4] if audio_file.lower().endswith(".wav") else audio_file
        if sample_id in seen:
            raise DataError(f"{source}: sample {sample_id!r} appears twice (first as entry {seen[sample_id]})")
        seen[sample_id] = key
        labels = tuple(raw[f].strip() for f in LABEL_FIELDS)
        targets = []
        for field, label in zip(LABEL_FIELDS, labels):
            try:
                targets.append(to_index(label, "cherma", source=f"{source} ({field})"))
            except InputError as exc:
                raise DataError(str(exc)) from None
        entries.append(CHERMAEntry(sample_id, audio_file, raw["video_file"].strip().replace("\\", "/"),
                                   labels, tuple(targets), source))  # type: ignore[arg-type]
    return entries


def feature_candidates(root: str | Path, folder: str, entry: CHERMAEntry) -> dict[str, list[Path]]:
    """Possible feature files of ``entry`` per modality, most likely first (``folder``: split folder name)."""
    root = Path(root)
    video = entry.video_file
    video_stem = video.rsplit(".", 1)[0] if "." in video.rsplit("/", 1)[-1] else video
    names = {"text": [f"{entry.id}.npy"], "audio": [f"{entry.id}.npy"],
             "vision": [f"{entry.id}.mp4.npy", f"{video}.npy", f"{video_stem}.npy"]}
    out = {}
    for modality, files in names.items():
        base = root / FEATURE_DIRS[modality]
        paths = [base / folder / f for f in files] + [base / f for f in files]
        out[modality] = list(dict.fromkeys(paths))
    return out


def load_feature(path: Path, modality: str, dim: int) -> np.ndarray:
    """Load one (T, dim) feature file without unpickling; a leading axis of size 1 is dropped."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc}); the file is truncated or corrupt") from None
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.shape[1] != dim or array.shape[0] < 1 or array.dtype.kind not in "fiu":
        raise DataError(f"{path}: {modality} feature has shape {array.shape} ({array.dtype}), expected (T, {dim}) "
                        f"numbers; the config's {modality} dim is {dim}")
    return array


def _resolve(root: Path, folder: str, entry: CHERMAEntry) -> dict[str, Path]:
    paths = {}
    for modality, candidates in feature_candidates(root, folder, entry).items():
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise DataError(f"{entry.source}: {modality} feature of sample {entry.id!r} not found; looked for "
                            f"{', '.join(str(p) for p in candidates)}")
        paths[modality] = found
    return paths


def convert_cherma(root: str | Path, store_root: str | Path, config: LFMIMConfig, *,
                   splits: Sequence[str] | None = None, progress: bool = True, shard_size: int = 512,
                   dtype: str = "float16", resume: bool = False) -> FeatureStore:
    """Stream every sample of the CHERMA release at ``root`` into a feature store at ``store_root``.

    ``splits`` defaults to every split file found (stored as train, valid, test).  All split files are
    parsed and every feature file located before anything is written; a bad feature file stops the
    conversion with a DataError naming it (what was written stays, and ``resume=True`` continues).
    """
    root = Path(root)
    names = list(splits) if splits is not None else available_splits(root)
    if not names:
        found = sorted(p.name for p in root.glob("*.json")) if root.is_dir() else []
        raise DataError(f"{root}: no CHERMA split files (train.json, valid.json or dev.json, test.json); "
                        f"found: {', '.join(found) or 'nothing'}")
    specs = resolve_specs(config)
    jobs = []
    for name in names:
        entries = read_cherma(root, name)
        folder = split_file(root, name).stem
        jobs.append((name, entries, [_resolve(root, folder, e) for e in entries]))
    with FeatureStoreWriter(store_root, config, shard_size=shard_size, dtype=dtype, resume=resume) as writer:
        for name, entries, paths in jobs:
            bar = tqdm(zip(entries, paths), total=len(entries), desc=f"CHERMA {name}", unit="sample",
                       disable=not progress)
            for entry, files in bar:
                if writer.has(name, entry.id):
                    continue
                features = [load_feature(files[m], m, specs[m].dim) for m in MODALITIES]
                writer.add(name, entry.id, *features, entry.targets)
            log.info("CHERMA %s: %d samples", name, len(entries))
    return FeatureStore(store_root)


def make_cherma_fixture(root: str | Path, n_per_split: int, config: LFMIMConfig, seed: int = 0) -> Path:
    """Write a tiny CHERMA-layout release: three splits, real Chinese labels, random features of the config's
    shapes (float32), audio of varying length (shorter and longer than the config's audio length)."""
    if int(n_per_split) < 1:
        raise InputError(f"n_per_split must be at least 1, got {n_per_split}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = list(VOCABULARIES["cherma"])
    specs = resolve_specs(config)
    audio_len = specs["audio"].length
    for split in SPLIT_FILES:
        entries = []
        for i in range(int(n_per_split)):
            stem = f"cherma_{split}_{i:04d}"
            labels = [names[j] for j in rng.integers(0, len(names), size=4)]
            entries.append({"audio_file": f"{stem}.wav", "video_file": f"{stem}.mp4",
                            **dict(zip(LABEL_FIELDS, labels))})
            steps = {0: 2 * audio_len + 3, 1: max(1, audio_len // 2)}.get(i, int(rng.integers(1, 2 * audio_len)))
            shapes = {"text": (specs["text"].length, specs["text"].dim), "audio": (steps, specs["audio"].dim),
                      "vision": (specs["vision"].length, specs["vision"].dim)}
            for modality, shape in shapes.items():
                name = f"{stem}.mp4.npy" if modality == "vision" else f"{stem}.npy"
                path = root / FEATURE_DIRS[modality] / split / name
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, rng.standard_normal(shape).astype(np.float32))
        text = json.dumps(entries, ensure_ascii=False, indent=1) + "\n"
        (root / f"{split}.json").write_text(text, encoding="utf-8")
    return root
