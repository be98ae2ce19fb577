"""Fusion on a clock tick: the latest window of every stage -> LFMIM -> an :class:`Estimate`.

A modality is available when the window holds evidence for it: a face in at least one frame (vision), speech
known to the voice activity detector (audio), a transcript of speech that ended within ``text_window`` seconds
(text).  See :mod:`edge.stream.estimate` for what an unavailable modality means for the estimate.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge.stream.estimate import Estimate, Smoother, make_estimate
from edge.stream.stages import ASRStage, AudioStage, VisionStage


class Fusion:
    def __init__(self, extractors: Any, vision: VisionStage | None, audio: AudioStage | None, asr: ASRStage | None,
                 smoother: Smoother, *, window_s: float, text_window_s: float) -> None:
        self.x = extractors
        self.profile = extractors.profile
        self.vision, self.audio, self.asr = vision, audio, asr
        self.smoother = smoother
        self.window_s, self.text_window_s = window_s, text_window_s
        self._text_cache: tuple[str, np.ndarray] | None = None
        self._blocks: dict[int, np.ndarray] = {}  # audio block index -> encoder frames
        self.index = 0
        self.compute_s = {"audio_encoder": 0.0, "text_encoder": 0.0, "lfmim": 0.0}
        #: where encoder failures go (set by the recognizer; see edge.stream.failures); None: they raise
        self.reporter: Any = None

    def _guarded(self, part: str, t: float, compute: Any, empty: Any) -> Any:
        """``compute()``, or ``empty`` when ``part`` is down for good or raises now (reported)."""
        if self.reporter is None:
            return compute()
        if self.reporter.is_down(part):
            return empty
        try:
            out = compute()
        except Exception as exc:  # reported at once; that modality is unavailable for this estimate
            self.reporter.report(part, exc, media_time=t)
            return empty
        self.reporter.recovered(part)
        return out

    def _vision(self, t: float) -> tuple[np.ndarray, bool, float | None, dict[str, int]]:
        from edge.features.vision_pre import sample_frames

        p = self.profile.vision
        feats = np.zeros((p.frames, p.dim), np.float32)
        if self.vision is None:
            return feats, False, None, {"frames": 0, "with_face": 0}
        frames = self.vision.ring.window(t, self.window_s)
        with_face = [f for f in frames if f.feature is not None]
        if with_face:
            for row, i in enumerate(sample_frames(len(frames), p.segments, p.per_segment).tolist()):
                if frames[i].feature is not None:
                    feats[row] = frames[i].feature
        age = t - with_face[-1].t if with_face else None
        return feats, bool(with_face), age, {"frames": len(frames), "with_face": len(with_face)}

    def _audio(self, t: float) -> tuple[np.ndarray, bool, float | None, float]:
        """Audio features of the window: the encoder frames of the complete blocks in it (each block is encoded
        once and cached, as extraction encodes the same blocks), fitted to the profile's length."""
        from edge.features.audio_pre import fit_frames

        p = self.profile.audio
        empty = np.zeros((p.frames, p.dim), np.float32)
        if self.audio is None:
            return empty, False, None, 0.0
        speech = self.audio.speech_in(t - self.window_s, t, known_by=t) if self.audio.segmenter is not None else True
        ring = self.audio.ring
        stop, first = ring.index_at(t), ring.index_at(t - self.window_s)
        if not speech or stop is None:
            return empty, False, None, 0.0
        block = p.block_samples
        k0, k1 = -(-max(first, 0) // block), stop // block
        spent = 0.0
        parts = []
        for k in range(k0, k1):
            if k not in self._blocks:
                started = time.perf_counter()
                self._blocks[k] = self.x.audio_block(ring.samples(k * block, (k + 1) * block))
                spent += time.perf_counter() - started
            parts.append(self._blocks[k])
        for k in [k for k in self._blocks if k < k0]:
            del self._blocks[k]
        frames = np.concatenate(parts) if parts else np.zeros((0, p.dim), np.float32)
        if len(frames) == 0:
            return empty, False, None, spent
        last = self.audio.last_speech(t) if self.audio.segmenter is not None else t
        return fit_frames(frames, p.frames), True, None if last is None else max(0.0, t - last), spent

    def _text(self, t: float) -> tuple[np.ndarray, bool, float | None, str, float]:
        recent = self.asr.recent(t, self.text_window_s) if self.asr is not None else []
        text = " ".join(tr.text for tr in recent)
        spent = 0.0
        if self._text_cache is None or self._text_cache[0] != text:
            started = time.perf_counter()
            self._text_cache = (text, self.x.text([text])[0])  # re-encoded only when the transcript changes
            spent = time.perf_counter() - started
        age = t - recent[-1].end if recent else None
        return self._text_cache[1], bool(text), age, text, spent

    def tick(self, t: float, *, origin: float = 0.0, clock_now: Any = None, newest_capture: float | None = None,
             dropped: dict[str, float] | None = None) -> Estimate:
        """The estimate at capture time ``t`` (uses only what was known by ``t``).

        With ``clock_now`` (the run's clock, live runs) and ``newest_capture`` (capture time of the newest sample
        used), the end-to-end latency is measured when the estimate is complete.  The estimate reports
        ``media_time`` and ``time`` relative to ``origin`` (the start of the run).
        """
        started = time.perf_counter()
        p = self.profile
        vision, v_ok, v_age, faces = self._vision(t)
        audio, a_ok, a_age, a_s = self._guarded(
            "audio_encoder", t, lambda: self._audio(t), (np.zeros((p.audio.frames, p.audio.dim), np.float32), False,
                                                         None, 0.0))
        text, t_ok, t_age, transcript, t_s = self._guarded(
            "text_encoder", t, lambda: self._text(t), (np.zeros((p.text.tokens, p.text.dim), np.float32), False,
                                                       None, "", 0.0))
        reasons = self.reporter.reasons() if self.reporter is not None else {}
        available = {"text": t_ok and "text" not in reasons, "audio": a_ok and "audio" not in reasons,
                     "vision": v_ok and "vision" not in reasons}
        # a modality whose part failed gets zero features, as padding does in training
        text = np.zeros_like(text) if "text" in reasons else text
        audio = np.zeros_like(audio) if "audio" in reasons else audio
        vision = np.zeros_like(vision) if "vision" in reasons else vision
        fused_started = time.perf_counter()
        try:
            probs = self.x.fuse(text, audio, vision)
        except Exception as exc:
            if self.reporter is None or not self.reporter.report("lfmim", exc, media_time=t):
                raise
            probs, available = None, {m: False for m in available}
            reasons = self.reporter.reasons()
        else:
            if self.reporter is not None:
                self.reporter.recovered("lfmim")
        l_s = time.perf_counter() - fused_started
        probs = probs or {"t": None, "a": None, "v": None, "m": None}
        raw = {"text": probs["t"] if available["text"] else None, "audio": probs["a"] if available["audio"] else None,
               "vision": probs["v"] if available["vision"] else None,
               "fused": probs["m"] if any(available.values()) else None}
        for name, value in (("audio_encoder", a_s), ("text_encoder", t_s), ("lfmim", l_s)):
            self.compute_s[name] += value
        latency = {"audio_encoder": a_s * 1e3, "text_encoder": t_s * 1e3, "lfmim": l_s * 1e3,
                   "tick": (time.perf_counter() - started) * 1e3}
        emitted_at = clock_now() if clock_now is not None else t
        if clock_now is not None and newest_capture is not None:
            latency["end_to_end"] = max(0.0, emitted_at - newest_capture) * 1e3
        estimate = make_estimate(self.index, time=emitted_at - origin, media_time=t - origin,
                                 classes=tuple(self.profile.classes), raw=raw, smoother=self.smoother,
                                 available=available, age_s={"text": t_age, "audio": a_age, "vision": v_age},
                                 transcript=transcript, latency_ms=latency, faces=faces, dropped=dropped,
                                 reasons=reasons)
        self.index += 1
        return estimate
