"""Calibration material: real samples drawn by a recipe, turned into each network's feeds through the run
path's own preprocessing and the FP32 networks of the build."""

from __future__ import annotations

import glob
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from edge.errors import ConfigError, InputError

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


@dataclass
class Material:
    """Preprocessed calibration samples, in draw order (the first ``calibrate`` set ranges, the rest are held out)."""

    frames: list[list[np.ndarray]] = field(default_factory=list)  # per video: RGB frames
    windows: list[np.ndarray] = field(default_factory=list)  # 16 kHz float32 windows
    texts: list[str] = field(default_factory=list)


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


def split_feeds(feeds: list[dict[str, np.ndarray]], recipes: Recipes, what: str, *,
                holdout: int | None = None) -> tuple[list, list]:
    """First ``calibrate`` feeds set ranges; the next ``holdout`` (the recipe's unless given) are for the gate."""
    if len(feeds) < 2:
        raise InputError(f"calibration for {what}: only {len(feeds)} sample(s); the recipe's data must give at "
                         "least two (one to calibrate, one to check)")
    held = recipes.holdout if holdout is None else holdout
    cut = min(recipes.calibrate, max(1, len(feeds) * recipes.calibrate // (recipes.calibrate + held)))
    return feeds[:cut], feeds[cut: cut + held]


class _Recorder:
    """Wraps a network's ``infer`` and keeps a copy of every feed it sees (for MTCNN calibration)."""

    def __init__(self, infer: Callable[[Mapping[str, np.ndarray]], Any], limit: int) -> None:
        self._infer, self.limit, self.feeds = infer, limit, []

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> Any:
        if len(self.feeds) < self.limit:
            self.feeds.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self._infer(feeds)


def vision_feeds(paths: Mapping[str, Path], material: Material, recipes: Recipes, *, face_size: int,
                 min_face: int, threads: int | None = None, align: str = "arcface") -> tuple[dict[str, list], list[list[np.ndarray]]]:
    """Run the FP32 MTCNN over the frames, recording each stage's feeds; align the faces for ResNet18.

    Returns ({"pnet"|"rnet"|"onet"|"resnet18": feeds}, aligned faces per video).
    """
    from edge.features.align import align_face
    from edge.features.mtcnn import FaceDetector
    from edge.features.vision_pre import normalize_faces
    from edge.runtime.onnxruntime_runner import OrtRunner

    limit = 4 * recipes.total
    runners = {name: OrtRunner(paths[name], threads=threads) for name in ("pnet", "rnet", "onet")}
    recorders = {name: _Recorder(r.infer, limit) for name, r in runners.items()}
    detector = FaceDetector(recorders["pnet"], recorders["rnet"], recorders["onet"], min_face=min_face)
    faces_per_video: list[list[np.ndarray]] = []
    for frames in material.frames:
        faces = []
        for rgb in frames:
            found = detector.detect(rgb)
            if found:
                faces.append(align_face(rgb, found[0].landmarks, face_size, kind=align))
        faces_per_video.append(faces)
    for r in runners.values():
        r.close()
    rng = np.random.default_rng(recipes.seed)
    feeds = {name: [rec.feeds[i] for i in rng.permutation(len(rec.feeds))] for name, rec in recorders.items()}
    all_faces = [f for faces in faces_per_video for f in faces]
    feeds["resnet18"] = [{"faces": normalize_faces(face[None], size=face_size)} for face in all_faces]
    log.info("vision calibration: %d frames, %d faces, P-Net %d / R-Net %d / O-Net %d feeds",
             sum(len(f) for f in material.frames), len(all_faces), *(len(feeds[n]) for n in ("pnet", "rnet", "onet")))
    return feeds, faces_per_video
