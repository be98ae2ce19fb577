"""Feeds for calibration and the fidelity gate: samples turned into each network's inputs through the run path's
own preprocessing and the build's FP32 networks (torch-free: numpy, OpenCV, ONNX Runtime, tokenizers).

The material (:class:`Material`: RGB frames per video, 16 kHz audio windows, sentences) comes from real
calibration clips (``edge.build.calibration``) or from the demo clip (:mod:`edge.prepare.demo_material`);
:func:`network_feeds` runs it through MTCNN (recording each stage's inputs), the face alignment, the tokenizer,
the audio blocks and the FP32 extractors (LFMIM's feeds are their features), so every network is calibrated and
gated on what it will see at run time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from edge._lazy import lazy_import
from edge.errors import InputError

log = logging.getLogger("edge")


@dataclass
class Material:
    """Preprocessed samples, in draw order (the first ``calibrate`` set ranges, the rest are held out)."""

    frames: list[list[np.ndarray]] = field(default_factory=list)  # per video: RGB frames
    windows: list[np.ndarray] = field(default_factory=list)  # 16 kHz float32 windows
    texts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Split:
    """How many samples set quantization ranges and how many the gate holds out (LFMIM's own count: its inputs are
    cheap to combine), and the seed of every draw."""

    calibrate: int = 32
    holdout: int = 16
    lfmim_holdout: int = 128
    seed: int = 0

    @property
    def total(self) -> int:
        return self.calibrate + self.holdout


def split_feeds(feeds: list[dict[str, np.ndarray]], split: Split, what: str, *,
                holdout: int | None = None) -> tuple[list, list]:
    """First ``calibrate`` feeds set ranges; the next ``holdout`` (the split's unless given) are for the gate."""
    if len(feeds) < 2:
        raise InputError(f"calibration for {what}: only {len(feeds)} sample(s); the recipe's data must give at "
                         "least two (one to calibrate, one to check)")
    held = split.holdout if holdout is None else holdout
    cut = min(split.calibrate, max(1, len(feeds) * split.calibrate // (split.calibrate + held)))
    return feeds[:cut], feeds[cut: cut + held]


class _Recorder:
    """Wraps a network's ``infer`` and keeps a copy of every feed it sees (for MTCNN calibration)."""

    def __init__(self, infer: Callable[[Mapping[str, np.ndarray]], Any], limit: int) -> None:
        self._infer, self.limit, self.feeds = infer, limit, []

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> Any:
        if len(self.feeds) < self.limit:
            self.feeds.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self._infer(feeds)


def vision_feeds(paths: Mapping[str, Path], material: Material, split: Split, *, face_size: int, min_face: int,
                 threads: int | None = None, align: str = "arcface") -> tuple[dict[str, list], list[list[np.ndarray]]]:
    """Run the FP32 MTCNN over the frames, recording each stage's feeds; align the faces for the face encoder.

    Returns ({"pnet"|"rnet"|"onet"|"resnet18": feeds}, aligned faces per video).
    """
    from edge.features.align import align_face
    from edge.features.mtcnn import FaceDetector
    from edge.features.vision_pre import normalize_faces
    from edge.runtime.onnxruntime_runner import OrtRunner

    limit = 4 * split.total
    runners = {name: OrtRunner(paths[name], threads=threads) for name in ("pnet", "rnet", "onet")}
    recorders = {name: _Recorder(r.infer, limit) for name, r in runners.items()}
    detector = FaceDetector(recorders["pnet"], recorders["rnet"], recorders["onet"], min_face=min_face)
    faces_per_video: list[list[np.ndarray]] = []
    try:
        for frames in material.frames:
            faces = []
            for rgb in frames:
                found = detector.detect(rgb)
                if found:
                    faces.append(align_face(rgb, found[0].landmarks, face_size, kind=align))
            faces_per_video.append(faces)
    finally:
        for r in runners.values():
            r.close()
    rng = np.random.default_rng(split.seed)
    feeds = {name: [rec.feeds[i] for i in rng.permutation(len(rec.feeds))] for name, rec in recorders.items()}
    all_faces = [f for faces in faces_per_video for f in faces]
    feeds["resnet18"] = [{"faces": normalize_faces(face[None], size=face_size)} for face in all_faces]
    log.info("vision samples: %d frames, %d faces, P-Net %d / R-Net %d / O-Net %d feeds",
             sum(len(f) for f in material.frames), len(all_faces), *(len(feeds[n]) for n in ("pnet", "rnet", "onet")))
    return feeds, faces_per_video


def network_feeds(fp32: Mapping[str, Path], material: Material, split: Split, profile: Any, *,
                  tokenizer_path: Path, do_normalize: bool, threads: int | None = None,
                  progress: bool = True, source: str = "") -> dict[str, list[dict[str, np.ndarray]]]:
    """Every network's feeds (``pnet`` ... ``lfmim``) from ``material``, through the FP32 networks ``fp32``."""
    from edge.features.audio_pre import fit_frames, prepare_waveform
    from edge.features.text_pre import encode_texts
    from edge.features.vision_pre import normalize_faces, sample_frames
    from edge.runtime.onnxruntime_runner import OrtRunner

    tqdm = lazy_import("tqdm").tqdm
    p = profile
    feeds, faces = vision_feeds(fp32, material, split, face_size=p.vision.face_size, min_face=p.vision.min_face,
                                threads=threads, align=p.vision.align)
    if not feeds["resnet18"]:
        raise InputError(f"no face found in the calibration videos{' of ' + source if source else ''}; point the "
                         "recipe's [vision] videos at clips that show faces")
    tokenizer = lazy_import("tokenizers", purpose="the text encoder's tokenizer").Tokenizer.from_file(str(tokenizer_path))
    feeds["text"] = [encode_texts(tokenizer, [t], length=p.text.tokens) for t in material.texts]
    block = p.audio.block_samples
    blocks = [[w[i:i + block] for i in range(0, w.size - block + 1, block)] for w in material.windows]
    feeds["audio"] = [{"waveform": prepare_waveform(b[0], p.audio.sample_rate, do_normalize=do_normalize)[None]}
                      for b in blocks]
    # LFMIM: the FP32 extractors' features of the same samples.
    n = min(len(feeds["text"]), len(feeds["audio"]))
    if n == 0:
        raise InputError(f"the calibration material{' of ' + source if source else ''} has no "
                         f"{'sentences' if not feeds['text'] else 'audio long enough for one block'}; LFMIM's feeds "
                         "need both")
    videos = [f for f in faces if f]
    with OrtRunner(fp32["text"], threads=threads) as text, OrtRunner(fp32["audio"], threads=threads) as audio, \
            OrtRunner(fp32["resnet18"], threads=threads) as resnet:
        vision_feats = []
        for video in videos:
            picks = sample_frames(len(video), p.vision.segments, p.vision.per_segment)
            batch = normalize_faces(np.stack([video[i] for i in picks]), size=p.vision.face_size)
            vision_feats.append(resnet.infer({"faces": batch})["features"])
        text_feats, audio_feats = [], []
        for i in tqdm(range(n), desc="LFMIM features", disable=not progress, leave=False):
            text_feats.append(text.infer(feeds["text"][i])["hidden"].astype(np.float32))
            frames = [audio.infer({"waveform": prepare_waveform(b, p.audio.sample_rate, do_normalize=do_normalize)[None]})
                      ["hidden"][0] for b in blocks[i]]
            audio_feats.append(fit_frames(np.concatenate(frames), p.audio.frames)[None].astype(np.float32))
    # LFMIM's inputs are cheap to combine: text i with audio and vision of other samples gives the gate enough
    # held-out samples for a 99 % agreement figure to mean something (one flip in 16 would fail it).
    total = split.calibrate + split.lfmim_holdout
    feeds["lfmim"] = [{"text": text_feats[i % n], "audio": audio_feats[(7 * i + 3) % n],
                       "vision": vision_feats[(13 * i + 5) % len(vision_feats)][None].astype(np.float32)}
                      for i in range(total)]
    return feeds
