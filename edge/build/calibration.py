"""Calibration material: real samples drawn by a recipe (``calibration/recipes.toml``) from a data folder; the
feeds each network gets from them are made by :mod:`edge.prepare.feeds`."""

from __future__ import annotations

import glob
import logging
import os
import re
try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (JetPack 6): the same parser from PyPI
    import tomli as tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ConfigError, InputError
from edge.prepare.feeds import Material, Split

log = logging.getLogger("edge")

REPO_ROOT = Path(__file__).resolve().parents[2]
_MARKUP = re.compile(r"\[[^\]]*\]")


@dataclass(frozen=True)
class Recipes:
    calibrate: int = 32
    holdout: int = 16
    lfmim_holdout: int = 128
    seed: int = 0
    videos: tuple[str, ...] = ()
    frames_per_video: int = 12
    audio_files: tuple[str, ...] = ()
    text_tables: tuple[str, ...] = ()
    source: str = ""

    @property
    def total(self) -> int:
        return self.calibrate + self.holdout

    @property
    def split(self) -> Split:
        return Split(self.calibrate, self.holdout, self.lfmim_holdout, self.seed)


def default_recipes_path() -> Path:
    return REPO_ROOT / "calibration" / "recipes.toml"


def load_recipes(path: str | Path | None = None) -> Recipes:
    path = Path(path) if path else default_recipes_path()
    if not path.is_file():
        raise InputError(f"calibration recipes not found at {path}; pass --recipes FILE (see calibration/recipes.toml "
                         "in the lfmim-edge repository)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    try:
        split, vision, audio, text = (data.get(k, {}) for k in ("split", "vision", "audio", "text"))
        recipes = Recipes(
            calibrate=int(split.get("calibrate", 32)), holdout=int(split.get("holdout", 16)),
            lfmim_holdout=int(split.get("lfmim_holdout", 128)),
            seed=int(split.get("seed", 0)), videos=tuple(vision.get("videos", ())),
            frames_per_video=int(vision.get("frames_per_video", 12)), audio_files=tuple(audio.get("files", ())),
            text_tables=tuple(text.get("tables", ())), source=str(path),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if recipes.calibrate < 1 or recipes.holdout < 1:
        raise ConfigError(f"{path}: [split] calibrate and holdout must be at least 1")
    return recipes


def resolve_data_dir(given: str | Path | None) -> Path:
    candidates = [given] if given else [os.environ.get("LFMIM_DATA"), REPO_ROOT.parent / "shared" / "data",
                                        Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise InputError(
        "no calibration data: pass --calibration-data DIR (a folder the globs of calibration/recipes.toml match, "
        f"e.g. your own clips){' ' + str(given) + ' is not a folder' if given else ''}; or build "
        "--precision fp32 / fp16, which need none"
    )


def _glob(data_dir: Path, patterns: tuple[str, ...], what: str, recipes: Recipes) -> list[Path]:
    files = sorted({Path(p) for pattern in patterns for p in glob.glob(str(data_dir / pattern))})
    if not files:
        raise InputError(f"{recipes.source}: no {what} under {data_dir} match {list(patterns)}; point "
                         "--calibration-data at a folder that has them, or edit the recipe")
    return files


def _read_texts(data_dir: Path, spec: str, recipes: Recipes) -> list[str]:
    import csv

    file, _, column = spec.rpartition(":")
    path = data_dir / file
    if not file or not path.is_file():
        raise InputError(f"{recipes.source}: text table {spec!r}: {path} not found (FILE:COLUMN expected)")
    with open(path, newline="", encoding="utf-8") as fh:
        if column.isdigit():
            rows = [r[int(column)] for r in csv.reader(fh, delimiter="\t") if len(r) > int(column)]
        else:
            reader = csv.DictReader(fh)
            if column not in (reader.fieldnames or []):
                raise InputError(f"{path}: no column {column!r} (columns: {', '.join(reader.fieldnames or [])})")
            rows = [r[column] for r in reader]
    return [t for t in (_MARKUP.sub("", r).strip() for r in rows) if t]


def gather_material(recipes: Recipes, data_dir: Path, *, window_samples: int, needs: set[str]) -> Material:
    """Decode and draw the samples of every modality in ``needs`` ("vision", "audio", "text")."""
    rng = np.random.default_rng(recipes.seed)
    material = Material()
    n = recipes.total
    if "vision" in needs:
        from edge.video import VideoFileReader

        for path in _glob(data_dir, recipes.videos, "videos", recipes):
            frames = [rgb for _, rgb in VideoFileReader(path)]
            if frames:
                picks = np.linspace(0, len(frames) - 1, min(recipes.frames_per_video, len(frames))).round().astype(int)
                material.frames.append([frames[i] for i in picks])
    if "audio" in needs:
        from edge.media import read_audio

        files = _glob(data_dir, recipes.audio_files, "audio files", recipes)
        for i in sorted(rng.choice(len(files), size=min(n, len(files)), replace=False)):
            x, _ = read_audio(files[i])
            window = np.zeros(window_samples, np.float32)
            window[: min(len(x), window_samples)] = x[:window_samples]
            material.windows.append(window)
    if "text" in needs:
        texts = [t for spec in recipes.text_tables for t in _read_texts(data_dir, spec, recipes)]
        if not texts:
            raise InputError(f"{recipes.source}: the text tables hold no text")
        material.texts = [texts[i] for i in rng.choice(len(texts), size=min(n, len(texts)), replace=False)]
    return material
