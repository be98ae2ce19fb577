"""Writing feature stores: :class:`FeatureStoreWriter` (the layout is described in :mod:`edge.train.store`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edge.config import MODALITIES, LFMIMConfig, ModalitySpec
from edge.errors import ConfigError, DataError, InputError
from edge.labels import CLASSES
from edge.fileio import write_text_atomic
from edge.train.store import (
    ARRAY_FILES, DTYPES, FIT_MODES, MANIFEST, Manifest, _SHARD_NAME, _SPLIT_NAME, _load_ids, fit_length,
    read_manifest,
)


log = logging.getLogger("edge")


def resolve_specs(specs: LFMIMConfig | Mapping[str, Any]) -> dict[str, ModalitySpec]:
    """Per-modality specs from an :class:`LFMIMConfig` or a mapping of modality -> ModalitySpec / {dim, length}."""
    if isinstance(specs, LFMIMConfig):
        return {m: specs.spec(m) for m in MODALITIES}
    if not isinstance(specs, Mapping) or set(specs) != set(MODALITIES):
        got = sorted(specs) if isinstance(specs, Mapping) else type(specs).__name__
        raise ConfigError(f"feature specs need exactly the modalities {', '.join(MODALITIES)}; got {got}")
    out = {}
    for m in MODALITIES:
        value = specs[m]
        if isinstance(value, Mapping) and {"dim", "length"} <= set(value):
            value = ModalitySpec(dim=int(value["dim"]), length=int(value["length"]))
        if not isinstance(value, ModalitySpec) or value.dim < 1 or value.length < 1:
            raise ConfigError(f"feature spec of {m} must be a ModalitySpec with positive dim and length, got {value!r}")
        out[m] = value
    return out


class _Buffer:
    """Samples of one split waiting to be flushed, kept in preallocated arrays of the store's dtype."""

    def __init__(self, specs: Mapping[str, ModalitySpec], dtype: str, size: int) -> None:
        self.arrays = {m: np.zeros((size, specs[m].length, specs[m].dim), dtype) for m in MODALITIES}
        self.arrays["lengths"] = np.zeros((size, 3), np.int32)
        self.arrays["labels"] = np.zeros((size, 4), np.int64)
        self.ids: list[str] = []
        self.id_set: set[str] = set()


class FeatureStoreWriter:
    """Write samples of any sequence length into a feature store, one complete shard at a time.

    ``specs`` is an :class:`LFMIMConfig` (its classes are used unless ``classes`` is given) or a mapping of
    modality -> ModalitySpec.  Writing into a folder that already holds a store requires ``resume=True`` and
    the same specs, classes, dtype and fit mode.  Not safe for several writers on one store at once.
    """

    def __init__(self, root: str | Path, specs: LFMIMConfig | Mapping[str, Any],
                 classes: Sequence[str] | None = None, *, shard_size: int = 512, dtype: str = "float16",
                 fit_mode: str = "uniform", resume: bool = False) -> None:
        if dtype not in DTYPES:
            raise ConfigError(f"unknown feature dtype {dtype!r}; expected one of: {', '.join(DTYPES)}")
        if fit_mode not in FIT_MODES:
            raise ConfigError(f"unknown fit mode {fit_mode!r}; expected one of: {', '.join(FIT_MODES)}")
        if int(shard_size) < 1:
            raise ConfigError(f"shard_size must be at least 1, got {shard_size}")
        if classes is None:
            classes = specs.classes if isinstance(specs, LFMIMConfig) else CLASSES
        self.root = Path(root)
        self.shard_size = int(shard_size)
        self.dtype = dtype
        self.fit_mode = fit_mode
        self.specs = resolve_specs(specs)
        self.classes = tuple(classes)
        self._buffers: dict[str, _Buffer] = {}
        self._stored: dict[str, set[str]] = {}
        self._closed = False
        wanted = Manifest(self.classes, dict(self.specs), {m: dtype for m in MODALITIES}, fit_mode, {})
        if (self.root / MANIFEST).exists():
            self._manifest = self._reopen(wanted, resume)
        else:
            if self.root.is_dir() and any(self.root.iterdir()):
                raise DataError(f"{self.root}: the folder is not empty and holds no {MANIFEST}; write the feature "
                                "store into a new or empty folder")
            self.root.mkdir(parents=True, exist_ok=True)
            self._manifest = wanted
            write_text_atomic(self.root / MANIFEST, wanted.to_json())
            log.info("feature store created at %s (%s)", self.root, dtype)

    def _reopen(self, wanted: Manifest, resume: bool) -> Manifest:
        found = read_manifest(self.root)
        diffs = []
        if found.classes != wanted.classes:
            diffs.append(f"classes {list(found.classes)} vs {list(wanted.classes)}")
        for m in MODALITIES:
            old, new = found.specs[m], wanted.specs[m]
            if (old, found.dtypes[m]) != (new, wanted.dtypes[m]):
                diffs.append(f"{m} (length {old.length}, dim {old.dim}, {found.dtypes[m]}) vs "
                             f"(length {new.length}, dim {new.dim}, {wanted.dtypes[m]})")
        if found.fit_mode != wanted.fit_mode:
            diffs.append(f"fit_mode {found.fit_mode!r} vs {wanted.fit_mode!r}")
        if diffs:
            raise DataError(f"{self.root / MANIFEST}: the existing store differs from this writer (store vs writer): "
                            f"{'; '.join(diffs)}; use the store's settings or write to a new folder")
        if not resume:
            raise DataError(f"{self.root}: a feature store already exists here; pass resume=True to add to it, "
                            "or choose a new folder")
        for split, shards in found.splits.items():
            self._stored[split] = {i for name, _ in shards for i in _load_ids(self.root / split / name / "ids.json")}
        self._remove_leftovers(found)
        log.info("resuming feature store %s: %s", self.root,
                 ", ".join(f"{s}={len(v)}" for s, v in self._stored.items()) or "empty")
        return found

    def _remove_leftovers(self, manifest: Manifest) -> None:
        """Delete half-written temp folders and shards that an interrupted writer never listed."""
        listed = {(s, name) for s, shards in manifest.splits.items() for name, _ in shards}
        for split_dir in (d for d in self.root.iterdir() if d.is_dir()):
            for child in (c for c in split_dir.iterdir() if c.is_dir()):
                stray = child.name.startswith(".tmp-shard-")
                orphan = _SHARD_NAME.match(child.name) and (split_dir.name, child.name) not in listed
                if stray or orphan:
                    log.warning("removing %s left by an interrupted writer (not listed in %s)", child, MANIFEST)
                    shutil.rmtree(child)

    def has(self, split: str, sample_id: str) -> bool:
        """Whether ``sample_id`` is already stored (or buffered) in ``split``."""
        buffer = self._buffers.get(split)
        return sample_id in self._stored.get(split, ()) or (buffer is not None and sample_id in buffer.id_set)

    def counts(self) -> dict[str, int]:
        """Samples per split, flushed and buffered."""
        names = set(self._stored) | set(self._buffers)
        return {s: len(self._stored.get(s, ())) + (len(self._buffers[s].ids) if s in self._buffers else 0)
                for s in sorted(names)}

    def add(self, split: str, sample_id: str, text: Any, audio: Any, vision: Any, labels: Sequence[int]) -> None:
        """Fit one sample's (T, D) features to the specs and buffer it; a full buffer is flushed as a shard."""
        if self._closed:
            raise InputError(f"{self.root}: the feature store writer is closed")
        if not isinstance(split, str) or not _SPLIT_NAME.match(split):
            raise InputError(f"invalid split name {split!r}; use letters, digits, '.', '-' or '_'")
        if not isinstance(sample_id, str) or not sample_id:
            raise DataError(f"sample ids must be non-empty strings, got {sample_id!r}")
        if self.has(split, sample_id):
            raise DataError(f"sample {sample_id!r} is already in split {split!r} of {self.root}")
        fitted, lengths = {}, []
        for m, x in zip(MODALITIES, (text, audio, vision)):
            fitted[m], valid = self._fit(sample_id, m, x)
            lengths.append(valid)
        label_row = self._labels(sample_id, labels)
        buffer = self._buffers.get(split)
        if buffer is None:
            buffer = self._buffers[split] = _Buffer(self.specs, self.dtype, self.shard_size)
        row = len(buffer.ids)
        for m in MODALITIES:
            buffer.arrays[m][row] = fitted[m]
        buffer.arrays["lengths"][row] = lengths
        buffer.arrays["labels"][row] = label_row
        buffer.ids.append(sample_id)
        buffer.id_set.add(sample_id)
        if len(buffer.ids) >= self.shard_size:
            self.flush(split)

    def _fit(self, sample_id: str, modality: str, x: Any) -> tuple[np.ndarray, int]:
        spec = self.specs[modality]
        x = np.asarray(x)
        if x.dtype.kind not in "fiu" or x.ndim != 2 or x.shape[1] != spec.dim or x.shape[0] < 1:
            raise DataError(f"sample {sample_id!r}: {modality} feature has shape {x.shape} ({x.dtype}), expected "
                            f"(T, {spec.dim}) numbers with T >= 1 (stored as ({spec.length}, {spec.dim}))")
        if not np.isfinite(x).all():
            raise DataError(f"sample {sample_id!r}: {modality} feature contains NaN or infinite values")
        fixed, valid = fit_length(x, spec.length, self.fit_mode)
        with np.errstate(over="ignore"):
            cast = fixed.astype(self.dtype)
        if not np.isfinite(cast).all():
            raise DataError(f"sample {sample_id!r}: {modality} feature values exceed the {self.dtype} range "
                            f"(largest magnitude {np.abs(x).max():g}); write the store with dtype='float32'")
        return cast, valid

    def _labels(self, sample_id: str, labels: Sequence[int]) -> list[int]:
        top = len(self.classes) - 1
        values = list(labels) if isinstance(labels, (Sequence, np.ndarray)) else []
        ok = len(values) == 4 and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                                      and -1 <= v <= top for v in values)
        if not ok:
            raise DataError(f"sample {sample_id!r}: labels must be 4 integer class indices (t, a, v, m) in 0..{top} "
                            f"or -1 for 'no label', got {labels!r}")
        return [int(v) for v in values]

    def flush(self, split: str | None = None) -> None:
        """Write the buffered samples of ``split`` (default: every split) as complete shards."""
        for name in ([split] if split is not None else list(self._buffers)):
            buffer = self._buffers.get(name)
            if buffer is not None and buffer.ids:
                self._write_shard(name, buffer)
                del self._buffers[name]

    def _write_shard(self, split: str, buffer: _Buffer) -> None:
        shards = self._manifest.splits.setdefault(split, [])
        shard = f"shard-{1 + max((int(s[6:]) for s, _ in shards), default=-1):05d}"
        split_dir = self.root / split
        split_dir.mkdir(parents=True, exist_ok=True)
        final = split_dir / shard
        if final.exists():
            log.warning("removing %s left by an interrupted writer (not listed in %s)", final, MANIFEST)
            shutil.rmtree(final)
        n = len(buffer.ids)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{shard}-", dir=split_dir))
        try:
            for key in ARRAY_FILES:
                with open(tmp / f"{key}.npy", "wb") as fh:
                    np.save(fh, np.ascontiguousarray(buffer.arrays[key][:n]))
                    fh.flush()
                    os.fsync(fh.fileno())
            (tmp / "ids.json").write_text(json.dumps(buffer.ids, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        shards.append((shard, n))
        write_text_atomic(self.root / MANIFEST, self._manifest.to_json())
        self._stored.setdefault(split, set()).update(buffer.ids)
        log.debug("wrote %s (%d samples)", final, n)

    def close(self) -> None:
        """Flush every buffered sample; further ``add`` calls raise."""
        if not self._closed:
            self.flush()
            self._closed = True

    def __enter__(self) -> "FeatureStoreWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        # Samples added before an error are valid: flush them too, so that resume=True continues after them.
        self.close()


__all__ = ["FeatureStoreWriter", "resolve_specs"]
