"""The live loop's options: one frozen dataclass with the defaults in one place; ``edge-run`` only fills it in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edge.errors import InputError

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

    def __post_init__(self) -> None:
        sources = [name for name in ("camera", "video", "audio") if getattr(self, name)]
        if len(sources) > 1:
            raise InputError(f"choose one source: --{sources[0]} or --{sources[1]}, not both")
        if self.speed not in ("realtime", "max"):
            raise InputError(f"--speed {self.speed!r}: expected realtime or max")
        if self.speed == "max" and not (self.video or self.audio):
            raise InputError("--speed max replays files only; add --video FILE or --audio FILE")
        if self.target not in ("cpu", "gpu"):
            raise InputError(f"--target {self.target!r}: expected cpu or gpu")
        for name in ("rate", "window", "fps", "max_seconds", "text_window", "partial_s"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if self.detect_every < 1:
            raise InputError(f"--detect-every must be at least 1, got {self.detect_every}")
        from edge.asr.registry import BACKEND_NAMES

        if self.asr not in BACKEND_NAMES:
            raise InputError(f"--asr {self.asr!r}: expected one of {', '.join(BACKEND_NAMES)}")

    @property
    def source(self) -> str:
        return "camera" if self.camera else "video" if self.video else "audio" if self.audio else "camera"

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)
