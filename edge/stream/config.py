"""The live loop's options: one frozen dataclass with the defaults in one place; ``edge-run`` only fills it in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import math

from edge.errors import InputError
from edge.stream.estimate import Smoother

SMOOTHINGS = Smoother.KINDS


class OptionsError(InputError):
    """Several mistakes in the live loop's options: ``mistakes`` holds one sentence each (the CLI prints one line
    for each)."""

    def __init__(self, mistakes: list[str]) -> None:
        self.mistakes = list(mistakes)
        super().__init__("; ".join(self.mistakes))

#: Help text of every field, shared by the CLI (a test checks that flags and fields agree).
HELP = {
    "profile": "shipped profile name or TOML file",
    "target": "build to run: cpu (ONNX Runtime) or gpu (TensorRT engines, ONNX Runtime CUDA as fallback)",
    "engines_root": "folder of builds (engines/<profile>/<target>/)",
    "engines": "explicit build folder (overrides --engines-root)",
    "camera": "camera: device index, file, RTSP URL, GStreamer pipeline, or csi://N on a Jetson",
    "mic": "microphone name or index (sounddevice); default: the system default",
    "video": "replay a video file (frames and its audio track)",
    "audio": "replay an audio file",
    "speed": "replay pace: realtime, or max (as fast as possible, identical results run to run)",
    "rate": "fused estimates per second (Hz); 0 = the profile's",
    "window": "seconds of evidence per estimate; 0 = the profile's",
    "fps": "video frames analysed per second; 0 = the profile's",
    "detect_every": "run face detection every N frames and track the face box in between",
    "smoothing": "ema, mean or none",
    "alpha": "EMA weight of the newest estimate",
    "asr": "speech recognition: auto (whisper when a Whisper model is installed, else pocketsphinx), whisper "
           "(faster-whisper), whisper-onnx (an edge-export-whisper folder, the TensorRT path), pocketsphinx (English), "
           "or none",
    "asr_model": "Whisper model: a CTranslate2 folder, package:NAME, a size name (base, small, large-v3-turbo) or Hub "
                 "id (downloaded when online), or an edge-export-whisper folder; default: the profile's, else the "
                 "installed package",
    "language": "spoken language for ASR (en, zh, ...; en,zh detects among these); default: the profile's, else "
                "detected per utterance",
    "text_window": "seconds a transcript stays relevant after its speech ended",
    "vad_threshold": "speech probability threshold of the voice activity detector",
    "threads": "ONNX Runtime threads per network (default: ONNX Runtime's choice)",
    "max_seconds": "stop after this many seconds (0 = run until the source ends or Ctrl-C)",
    "random_weights": "when no build exists and the profile's weights are not at hand, build with random weights "
                      "(mechanics and cost only: the estimates mean nothing)",
    "partial_s": "transcribe ongoing speech every this many seconds of it (partial transcripts; 0 = finals only)",
    "restart": "restart a stage that fails up to N times (waits 0.25 s, doubling, at most 5 s); 0 = a failed stage "
               "stays down and its modality unavailable",
}


@dataclass(frozen=True)
class RunConfig:
    profile: str = "starter"
    target: str = "cpu"
    engines_root: str = "engines"
    engines: str = ""
    camera: str = ""
    mic: str = ""
    video: str = ""
    audio: str = ""
    speed: str = "realtime"
    rate: float = 0.0
    window: float = 0.0
    fps: float = 0.0
    detect_every: int = 4
    smoothing: str = "ema"
    alpha: float = 0.5
    asr: str = "auto"
    asr_model: str = ""
    language: str = ""
    text_window: float = 8.0
    vad_threshold: float = 0.5
    threads: int = 0
    max_seconds: float = 0.0
    random_weights: bool = False
    partial_s: float = 3.0
    restart: int = 0

    def __post_init__(self) -> None:
        mistakes = self.mistakes()
        if mistakes:
            raise OptionsError(mistakes)

    def mistakes(self) -> list[str]:
        """Every problem with these options, one sentence each (empty: the options are fine)."""
        out: list[str] = []
        sources = [name for name in ("camera", "video", "audio") if getattr(self, name)]
        if len(sources) > 1:
            out.append(f"choose one source: --{sources[0]} or --{sources[1]}, not both")
        if self.speed not in ("realtime", "max"):
            out.append(f"--speed {self.speed!r}: expected realtime or max")
        elif self.speed == "max" and not (self.video or self.audio):
            out.append("--speed max replays files only; add --video FILE or --audio FILE")
        if self.target not in ("cpu", "gpu"):
            out.append(f"--target {self.target!r}: expected cpu or gpu")
        for name in ("rate", "window", "fps", "max_seconds", "text_window", "partial_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                out.append(f"--{name.replace('_', '-')} must be a number >= 0, got {value!r}")
        if self.rate and self.rate > 50:
            out.append(f"--rate {self.rate}: at most 50 estimates per second")
        if not isinstance(self.detect_every, int) or self.detect_every < 1:
            out.append(f"--detect-every must be a whole number >= 1, got {self.detect_every!r}")
        if self.smoothing not in SMOOTHINGS:
            out.append(f"--smoothing {self.smoothing!r}: expected one of {', '.join(SMOOTHINGS)}")
        if not isinstance(self.alpha, (int, float)) or not (0.0 < self.alpha <= 1.0):
            out.append(f"--alpha {self.alpha!r}: the EMA weight must lie in (0, 1]")
        if not isinstance(self.vad_threshold, (int, float)) or not (0.0 < self.vad_threshold < 1.0):
            out.append(f"--vad-threshold {self.vad_threshold!r}: a speech probability in (0, 1)")
        from edge.asr.registry import BACKEND_NAMES

        if self.asr not in BACKEND_NAMES:
            out.append(f"--asr {self.asr!r}: expected one of {', '.join(BACKEND_NAMES)}")
        elif self.asr == "whisper-onnx" and not self.asr_model:
            out.append("--asr whisper-onnx needs --asr-model DIR (a Whisper export: edge-export-whisper MODEL DIR)")
        elif self.asr_model and self.asr in ("pocketsphinx", "none"):
            out.append(f"--asr-model is for a Whisper model; --asr {self.asr} takes none")
        codes = [c.strip() for c in self.language.split(",")] if self.language else []
        if any(not (c.isalpha() and c.islower() and 2 <= len(c) <= 3) for c in codes):
            out.append(f"--language {self.language!r}: a language code such as en or zh (or a list: en,zh)")
        if not isinstance(self.threads, int) or self.threads < 0:
            out.append(f"--threads must be a whole number >= 0 (0 = ONNX Runtime's choice), got {self.threads!r}")
        if not isinstance(self.restart, int) or isinstance(self.restart, bool) or self.restart < 0:
            out.append(f"--restart must be a whole number >= 0, got {self.restart!r}")
        return out

    @property
    def source(self) -> str:
        return "camera" if self.camera else "video" if self.video else "audio" if self.audio else "camera"

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)
