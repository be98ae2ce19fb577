"""The run path's feature extraction over a build's runners (no torch): the same code serves ``edge-extract``
(training features), calibration checks, benchmarks and the live loop, so training features equal deployment
features.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.runtime.engines import EngineSet

if TYPE_CHECKING:
    from edge.confidence import Calibration

log = logging.getLogger("edge")


@dataclass(frozen=True)
class FaceCrop:
    """One frame's face: the aligned crop and where it was found (None when no face was found)."""

    aligned: np.ndarray | None
    box: tuple[float, float, float, float] | None
    score: float
    landmarks: np.ndarray | None = None


class Extractors:
    """Text, audio and vision features and LFMIM's fused outputs from a build's runners.

    Stateless apart from the loaded tokenizer: one instance may serve several streams.
    """

    def __init__(self, engines: EngineSet, *, face_batch: int = 16) -> None:
        from edge.features.mtcnn import FaceDetector

        self.engines = engines
        self.profile = engines.profile
        self.runners = engines.runners
        self.face_batch = face_batch
        r = self.runners
        self.detector = FaceDetector(r["pnet"], r["rnet"], r["onet"], min_face=self.profile.vision.min_face)
        tokenizers = lazy_import("tokenizers", purpose="tokenising transcripts on the run path")
        if not engines.tokenizer_path.is_file():
            raise InputError(f"{engines.tokenizer_path}: the build has no tokenizer; rebuild with: "
                             f"{engines.manifest.get('rebuild')}")
        self.tokenizer = tokenizers.Tokenizer.from_file(str(engines.tokenizer_path))
        # encode_texts lays out [CLS] ... [SEP] [PAD] itself: a tokenizer.json that pads or truncates on its own
        # (some packaged ones pad to 128) would otherwise feed its pads in as words
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.calibration = build_calibration(engines.manifest)

    # -- text ----------------------------------------------------------------------------------------------------
    def text(self, texts: Sequence[str]) -> np.ndarray:
        """(B, tokens, dim) token features of each text ('' gives [CLS] [SEP]), zero past the text's [SEP] like
        every padded row of a feature store (the encoder's outputs at [PAD] positions carry no information)."""
        from edge.features.text_pre import encode_texts

        feeds = encode_texts(self.tokenizer, list(texts), length=self.profile.text.tokens)
        hidden = self.runners["text"].infer(feeds)["hidden"]
        return hidden * feeds["attention_mask"][..., None].astype(hidden.dtype)

    # -- audio ---------------------------------------------------------------------------------------------------
    def audio_block(self, chunk: np.ndarray) -> np.ndarray:
        """(frames, dim) encoder frames of one block (at most ``block_s`` seconds of 16 kHz audio; 20 ms hop).

        The block is normalised as the encoder expects, zero-padded to the encoder's fixed input, and only the
        frames that cover real audio are kept.
        """
        from edge.features.audio_pre import num_frames, prepare_waveform

        block = self.profile.audio.block_samples
        x = np.asarray(chunk, dtype=np.float32).reshape(-1)[:block]
        keep = num_frames(x.size)
        if keep == 0:
            return np.zeros((0, self.profile.audio.dim), np.float32)
        padded = np.zeros(block, np.float32)
        padded[: x.size] = prepare_waveform(x, self.profile.audio.sample_rate, do_normalize=self.engines.audio_do_normalize)
        return self.runners["audio"].infer({"waveform": padded[None]})["hidden"][0, :keep]

    def audio_frames(self, samples: np.ndarray) -> np.ndarray:
        """(frames, dim) encoder frames of 16 kHz mono audio of any length: consecutive blocks of the profile's
        ``block_s``, each encoded once (the live loop encodes the same blocks and caches them)."""
        block = self.profile.audio.block_samples
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        parts = [self.audio_block(x[i:i + block]) for i in range(0, x.size, block)]
        parts = [p for p in parts if len(p)]
        return np.concatenate(parts) if parts else np.zeros((0, self.profile.audio.dim), np.float32)

    def audio(self, samples: np.ndarray) -> np.ndarray:
        """(frames, dim) fitted to the profile's length (uniform sampling or zero padding)."""
        from edge.features.audio_pre import fit_frames

        return fit_frames(self.audio_frames(samples), self.profile.audio.frames)

    # -- vision --------------------------------------------------------------------------------------------------
    def face(self, rgb: np.ndarray) -> FaceCrop:
        """Detect the most confident face of an RGB frame and align it (no face: ``aligned`` is None)."""
        from edge.features.align import align_face

        found = self.detector.detect(rgb)
        if not found:
            return FaceCrop(None, None, 0.0)
        best = found[0]
        aligned = align_face(rgb, best.landmarks, self.profile.vision.face_size, kind=self.profile.vision.align)
        return FaceCrop(aligned, tuple(float(v) for v in best.box), float(best.score), np.asarray(best.landmarks))

    def face_features(self, faces: np.ndarray) -> np.ndarray:
        """(N, face, face, 3) uint8 aligned faces -> (N, dim) features, in batches."""
        from edge.features.vision_pre import normalize_faces

        if len(faces) == 0:
            return np.zeros((0, self.profile.vision.dim), np.float32)
        out = [self.runners["resnet18"].infer({"faces": normalize_faces(faces[i:i + self.face_batch],
                                                                           size=self.profile.vision.face_size)})["features"]
               for i in range(0, len(faces), self.face_batch)]
        return np.concatenate(out)

    def vision(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
        """The paper's clip features: 8 x 8 frames sampled over the clip -> (64, dim); frames without a face give
        zero rows (none is invented).  Returns (features, number of frames with a face)."""
        from edge.features.vision_pre import sample_frames

        if not frames:
            raise InputError("a clip without video frames has no vision features")
        p = self.profile.vision
        picks = sample_frames(len(frames), p.segments, p.per_segment)
        crops: dict[int, FaceCrop] = {}
        for i in sorted(set(picks.tolist())):
            crops[i] = self.face(frames[i])
        with_face = [i for i in picks.tolist() if crops[i].aligned is not None]
        features = np.zeros((len(picks), p.dim), np.float32)
        if with_face:
            unique = sorted(set(with_face))
            encoded = dict(zip(unique, self.face_features(np.stack([crops[i].aligned for i in unique]))))
            for row, i in enumerate(picks.tolist()):
                if i in encoded:
                    features[row] = encoded[i]
        return features, len(with_face)

    # -- fusion --------------------------------------------------------------------------------------------------
    def fuse_logits(self, text: np.ndarray, audio: np.ndarray, vision: np.ndarray) -> dict[str, np.ndarray]:
        """LFMIM over one sample's features -> logits of heads t, a, v, m, each (classes,)."""
        feeds = {"text": np.asarray(text, np.float32)[None] if np.ndim(text) == 2 else np.asarray(text, np.float32),
                 "audio": np.asarray(audio, np.float32)[None], "vision": np.asarray(vision, np.float32)[None]}
        out = self.runners["lfmim"].infer(feeds)
        return {head: out[head][0] for head in ("t", "a", "v", "m")}

    def fuse(self, text: np.ndarray, audio: np.ndarray, vision: np.ndarray) -> dict[str, np.ndarray]:
        """LFMIM over one sample's features -> calibrated probabilities of heads t, a, v, m, each (classes,):
        ``softmax(logits / T + b)`` with the build's calibration of each head (identity where none is recorded)."""
        logits = self.fuse_logits(text, audio, vision)
        return {head: self.calibration.probs(head, z).astype(np.float32) for head, z in logits.items()}


_WARNED: set = set()


def build_calibration(manifest: dict) -> "Calibration":
    """The per-head calibration a build records for LFMIM (``networks.lfmim.calibration``; copied from the
    checkpoint's metadata when it was built), or the identity with a warning when the build has none."""
    from edge.confidence import Calibration

    record = manifest.get("networks", {}).get("lfmim", {}).get("calibration")
    key = (manifest.get("profile", {}).get("hash"), manifest.get("created"))
    if not record and not manifest.get("random_weights") and key not in _WARNED:  # once per build, not per stream
        _WARNED.add(key)
        log.warning("the build records no calibration of LFMIM's heads: its probabilities are uncalibrated "
                    "(calibrate the checkpoint with edge-eval --calibrate and rebuild: %s)", manifest.get("rebuild"))
    return Calibration.from_dict(record, source="the build's LFMIM calibration")
