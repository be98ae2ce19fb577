"""The on-disk feature store: fixed-length features in shards that are memory-mapped, never loaded whole.

Layout of a store at ``ROOT`` (also described in ``docs/feature-store.md``)::

    ROOT/store.json                      manifest, rewritten atomically after every shard
    ROOT/<split>/shard-00000/text.npy    (n, Lt, Dt) float16 (or float32) text features, zero-padded
    ROOT/<split>/shard-00000/audio.npy   (n, La, Da) audio features
    ROOT/<split>/shard-00000/vision.npy  (n, Lv, Dv) vision features
    ROOT/<split>/shard-00000/lengths.npy (n, 3) int32 valid (unpadded) length of text, audio, vision
    ROOT/<split>/shard-00000/labels.npy  (n, 4) int64 class index of the t, a, v, m labels; -1 = no label
    ROOT/<split>/shard-00000/ids.json    the n sample ids, in row order
    ROOT/<split>/shard-00001/...

``store.json``::

    {"format": "lfmim-edge-store/1",
     "classes": ["anger", ...],
     "modalities": {"text": {"dim": 768, "length": 80, "dtype": "float16"}, "audio": {...}, "vision": {...}},
     "fit_mode": "uniform",
     "splits": {"train": [{"shard": "shard-00000", "count": 512}, ...], "valid": [...]}}

Only shards listed in ``store.json`` belong to the store.  The writer (:mod:`edge.train.store_writer`) builds each shard in a hidden
``<split>/.tmp-shard-NNNNN-*`` folder, renames it into place, then rewrites ``store.json``; an interrupted
writer therefore loses at most the samples it had not flushed, and ``FeatureStoreWriter(..., resume=True)``
continues where it stopped.  Readers open every array with ``np.load(mmap_mode="r")``; only the rows of the
current batch (and the labels and ids, which are small) are ever read into memory.

Sequences of any length are fitted to the modality's length with :func:`fit_length` (the paper's rule: uniform
sampling when longer, zero padding at the end when shorter); the valid length is kept in ``lengths.npy``.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from edge.config import MODALITIES, ModalitySpec
from edge.features.audio_pre import uniform_indices
from edge.errors import DataError, InputError

log = logging.getLogger("edge")

FORMAT = "lfmim-edge-store/1"
MANIFEST = "store.json"
DTYPES = ("float16", "float32")
FIT_MODES = ("uniform", "crop")
#: Label columns of ``labels.npy``: text, audio, vision, multimodal.
LABEL_COLUMNS = ("t", "a", "v", "m")
ARRAY_FILES = (*MODALITIES, "lengths", "labels")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHARD_NAME = re.compile(r"^shard-\d{5}$")
_OPEN_SHARDS = 8  # memory-mapped shards a SplitView keeps open at once


def fit_length(x: Any, length: int, mode: str = "uniform") -> tuple[np.ndarray, int]:
    """Fit a (T, D) sequence to ``length`` rows; return ``(fixed, valid_length)``.

    ``mode="uniform"`` (the paper's rule): when T > length, keep rows ``rint(linspace(0, T - 1, length))`` (the
    first and last rows always included); ``mode="crop"`` keeps the first ``length`` rows instead.  When
    T <= length the sequence is copied and zero-padded at the end, and ``valid_length`` is T.
    """
    if mode not in FIT_MODES:
        raise InputError(f"unknown fit mode {mode!r}; expected one of: {', '.join(FIT_MODES)}")
    if int(length) < 1:
        raise InputError(f"length must be at least 1, got {length}")
    x = np.asarray(x)
    if x.ndim != 2:
        raise DataError(f"expected a (T, D) sequence, got an array of shape {x.shape}")
    length = int(length)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
    steps = x.shape[0]
    if steps > length:
        if mode == "uniform":
            return np.ascontiguousarray(x[uniform_indices(steps, length)], dtype=dtype), length
        return np.ascontiguousarray(x[:length], dtype=dtype), length
    fixed = np.zeros((length, x.shape[1]), dtype=dtype)
    fixed[:steps] = x
    return fixed, steps


class Sample(NamedTuple):
    """One stored sample; features are float32 (length, dim) arrays, zero-padded past ``lengths``."""

    id: str
    text: np.ndarray
    audio: np.ndarray
    vision: np.ndarray
    lengths: np.ndarray  # (3,) int32: valid length of text, audio, vision
    labels: np.ndarray  # (4,) int64: t, a, v, m class indices, -1 where absent


@dataclass(frozen=True)
class Manifest:
    """The parsed ``store.json``."""

    classes: tuple[str, ...]
    specs: dict[str, ModalitySpec]
    dtypes: dict[str, str]
    fit_mode: str
    splits: dict[str, list[tuple[str, int]]]

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "classes": list(self.classes),
            "modalities": {m: {"dim": self.specs[m].dim, "length": self.specs[m].length, "dtype": self.dtypes[m]}
                           for m in MODALITIES},
            "fit_mode": self.fit_mode,
            "splits": {s: [{"shard": n, "count": c} for n, c in shards] for s, shards in self.splits.items()},
        }
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def read_manifest(root: str | Path) -> Manifest:
    """Read and validate ``ROOT/store.json``; every problem is a :class:`DataError` naming the file."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: not found; {Path(root)} is not a feature store (write one with FeatureStoreWriter "
                        "or `convert_cherma`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); the store manifest is damaged") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: not an lfmim-edge feature store (format {found!r}, expected {FORMAT!r})")
    try:
        classes = tuple(str(c) for c in data["classes"])
        mods = data["modalities"]
        specs = {m: ModalitySpec(dim=int(mods[m]["dim"]), length=int(mods[m]["length"])) for m in MODALITIES}
        dtypes = {m: str(mods[m]["dtype"]) for m in MODALITIES}
        splits = {str(s): [(str(e["shard"]), int(e["count"])) for e in shards] for s, shards in data["splits"].items()}
        fit_mode = str(data.get("fit_mode", "uniform"))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{path}: the manifest is incomplete or malformed ({type(exc).__name__}: {exc})") from None
    bad = [f"{m} dtype {d!r}" for m, d in dtypes.items() if d not in DTYPES]
    bad += [f"{m} {s}" for m, s in specs.items() if s.dim < 1 or s.length < 1]
    bad += [f"shard {s}/{n} count {c}" for s, sh in splits.items() for n, c in sh if c < 1 or not _SHARD_NAME.match(n)]
    if bad:
        raise DataError(f"{path}: invalid manifest entries: {', '.join(bad)}")
    return Manifest(classes, specs, dtypes, fit_mode, splits)


def _load_array(path: Path, *, mmap: bool = True) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: missing; the shard is incomplete (rebuild the store)")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc}); the shard is damaged (rebuild the store)") from None


def _load_ids(path: Path) -> list[str]:
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: missing; the shard is incomplete (rebuild the store)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); the shard is damaged") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise DataError(f"{path}: expected a JSON list of sample id strings")
    return ids


class FeatureStore:
    """Read access to a feature store written by :class:`FeatureStoreWriter`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._manifest = read_manifest(self.root)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._manifest.splits)

    @property
    def classes(self) -> tuple[str, ...]:
        return self._manifest.classes

    @property
    def specs(self) -> dict[str, ModalitySpec]:
        return dict(self._manifest.specs)

    @property
    def dtypes(self) -> dict[str, str]:
        return dict(self._manifest.dtypes)

    def split(self, name: str) -> "SplitView":
        if name not in self._manifest.splits:
            available = ", ".join(self.splits) or "none"
            raise DataError(f"{self.root / MANIFEST}: no split {name!r}; available splits: {available}")
        shards = self._manifest.splits[name]
        if not shards:
            raise DataError(f"{self.root / MANIFEST}: split {name!r} is empty (it has no shards)")
        return SplitView(self, name, shards)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={sum(c for _, c in sh)}" for s, sh in self._manifest.splits.items())
        return f"FeatureStore({str(self.root)!r}, {counts})"


class SplitView:
    """One split of a store: random access and streaming batches over memory-mapped shards."""

    def __init__(self, store: FeatureStore, name: str, shards: Sequence[tuple[str, int]]) -> None:
        self.store = store
        self.name = name
        self._shards = [(store.root / name / shard, count) for shard, count in shards]
        self._offsets = np.concatenate([[0], np.cumsum([c for _, c in shards])]).astype(np.int64)
        self._open: OrderedDict[int, dict[str, Any]] = OrderedDict()

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for data-loader workers without copying mapped arrays: each process maps its own shards.
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        return f"SplitView({self.name!r}, {len(self)} samples in {len(self._shards)} shards)"

    def _shard(self, index: int) -> dict[str, Any]:
        """Memory-map shard ``index`` (kept in a small LRU cache)."""
        if index in self._open:
            self._open.move_to_end(index)
            return self._open[index]
        folder, count = self._shards[index]
        arrays: dict[str, Any] = {key: _load_array(folder / f"{key}.npy") for key in ARRAY_FILES}
        arrays["ids"] = _load_ids(folder / "ids.json")
        for key, array in arrays.items():
            if len(array) != count:
                raise DataError(f"{folder / key}{'.json' if key == 'ids' else '.npy'}: holds {len(array)} samples, "
                                f"store.json says {count}; the shard is damaged (run check(), rebuild the store)")
        self._open[index] = arrays
        if len(self._open) > _OPEN_SHARDS:
            self._open.popitem(last=False)
        return arrays

    def _read(self, rows: np.ndarray) -> dict[str, Any]:
        """Read the global rows ``rows`` (any order) into a batch dictionary."""
        rows = np.asarray(rows, dtype=np.int64)
        n = len(rows)
        specs = self.store._manifest.specs
        out: dict[str, Any] = {m: np.empty((n, specs[m].length, specs[m].dim), np.float32) for m in MODALITIES}
        out["lengths"] = np.empty((n, 3), np.int32)
        out["labels"] = np.empty((n, 4), np.int64)
        ids: list[str] = [""] * n
        shard_of = np.searchsorted(self._offsets, rows, side="right") - 1
        for s in np.unique(shard_of):
            pos = np.nonzero(shard_of == s)[0]
            local = rows[pos] - self._offsets[s]
            order = np.argsort(local, kind="stable")
            pos, local = pos[order], local[order]
            arrays = self._shard(int(s))
            for key in ARRAY_FILES:
                out[key][pos] = arrays[key][local]
            for p, i in zip(pos, local):
                ids[p] = arrays["ids"][i]
        out["ids"] = ids
        out["index"] = rows
        return out

    def __getitem__(self, i: int) -> Sample:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"sample index {i} out of range for split {self.name!r} of {n} samples")
        b = self._read(np.array([i % n]))
        return Sample(b["ids"][0], b["text"][0], b["audio"][0], b["vision"][0], b["lengths"][0], b["labels"][0])

    @property
    def ids(self) -> list[str]:
        """Every sample id, in row order (read from the small ``ids.json`` files)."""
        return [i for folder, _ in self._shards for i in _load_ids(folder / "ids.json")]

    def labels(self) -> np.ndarray:
        """The (N, 4) int64 label array (t, a, v, m) of the whole split."""
        parts = []
        for folder, count in self._shards:
            labels = np.asarray(_load_array(folder / "labels.npy"))
            if labels.shape != (count, 4):
                raise DataError(f"{folder / 'labels.npy'}: expected shape ({count}, 4), found {labels.shape}")
            parts.append(labels.astype(np.int64))
        return np.concatenate(parts)

    def order(self, *, shuffle: bool = False, seed: int = 0, window: int = 4) -> np.ndarray:
        """The global row order of one pass.

        Shuffled: shards are permuted, then taken ``window`` at a time and the rows of each group permuted
        together, so a batch mixes several shards while only a few shards are read in any stretch of a pass.
        Deterministic for a given ``seed``.
        """
        if not shuffle:
            return np.arange(len(self), dtype=np.int64)
        rng = np.random.default_rng(seed)
        shard_order = rng.permutation(len(self._shards))
        window = max(1, int(window))
        parts = []
        for g in range(0, len(shard_order), window):
            group = [np.arange(self._offsets[s], self._offsets[s + 1]) for s in shard_order[g:g + window]]
            parts.append(rng.permutation(np.concatenate(group)))
        return np.concatenate(parts).astype(np.int64)

    def iter_batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                     window: int = 4) -> Iterator[dict[str, Any]]:
        """Yield batches as dictionaries of stacked numpy arrays.

        Keys: ``text``/``audio``/``vision`` float32 (B, L, D); ``lengths`` int32 (B, 3); ``labels`` int64 (B, 4);
        ``ids`` (list of B strings); ``index`` int64 (B,) row numbers in the split.  Only the rows of the
        current batch are read from disk.
        """
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        order = self.order(shuffle=shuffle, seed=seed, window=window)
        for start in range(0, len(order), int(batch_size)):
            rows = order[start:start + int(batch_size)]
            if drop_last and len(rows) < batch_size:
                return
            yield self._read(rows)

    def check(self) -> int:
        """Verify every shard's files, shapes, dtypes, value ranges and ids; return the number of samples."""
        manifest = self.store._manifest
        seen: set[str] = set()
        for folder, count in self._shards:
            for m in MODALITIES:
                spec, dtype = manifest.specs[m], manifest.dtypes[m]
                _expect(folder / f"{m}.npy", (count, spec.length, spec.dim), dtype)
            lengths = np.asarray(_expect(folder / "lengths.npy", (count, 3), "int32"))
            limits = np.array([manifest.specs[m].length for m in MODALITIES])
            if (lengths < 0).any() or (lengths > limits).any():
                raise DataError(f"{folder / 'lengths.npy'}: valid lengths must lie in 0..{limits.tolist()}")
            labels = np.asarray(_expect(folder / "labels.npy", (count, 4), "int64"))
            if ((labels < -1) | (labels >= len(manifest.classes))).any():
                raise DataError(f"{folder / 'labels.npy'}: labels must lie in -1..{len(manifest.classes) - 1}")
            ids = _load_ids(folder / "ids.json")
            if len(ids) != count:
                raise DataError(f"{folder / 'ids.json'}: expected {count} ids (as store.json says), found {len(ids)}")
            dup = seen.intersection(ids) or (len(set(ids)) != len(ids) and {"(within the shard)"})
            if dup:
                raise DataError(f"{folder / 'ids.json'}: duplicate sample ids in split {self.name!r}: "
                                f"{', '.join(sorted(dup)[:5])}")
            seen.update(ids)
        return len(self)


def _expect(path: Path, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    array = _load_array(path)
    if array.shape != shape or array.dtype != np.dtype(dtype):
        raise DataError(f"{path}: expected shape {shape} {dtype}, found {array.shape} {array.dtype}; "
                        "the shard does not match store.json (rebuild the store)")
    return array
