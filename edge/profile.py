"""Profiles: everything that must agree between training and deployment, in one TOML file.

A profile names the extractors and their weights, feature dims and sequence lengths, window and rates, the
classes, and the LFMIM configuration and checkpoint.  Shipped profiles live in ``edge/profiles/``; any other
TOML file can be passed by path.  Built artifacts record :func:`profile_hash`; a mismatch is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (JetPack 6): the same parser from PyPI
    import tomli as tomllib

from edge.config import LFMIMConfig, ModalitySpec
from edge.errors import ConfigError

#: A language code as Whisper names languages: "en", "zh", "yue", "haw".
LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")


@dataclass(frozen=True)
class TextProfile:
    encoder: str = "bert"
    weights: str = ""
    tokens: int = 80
    dim: int = 768


@dataclass(frozen=True)
class AudioProfile:
    encoder: str = "wav2vec2"
    weights: str = ""
    sample_rate: int = 16000
    window_s: float = 4.0
    #: The encoder's input: audio is encoded in consecutive blocks of this many seconds, each once (the live loop
    #: caches them; extraction uses the same blocks), and a window's features are its blocks' frames.
    block_s: float = 1.0
    frames: int = 100
    dim: int = 768

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def block_samples(self) -> int:
        return int(round(self.block_s * self.sample_rate))


@dataclass(frozen=True)
class VisionProfile:
    detector: str = "mtcnn"
    detector_weights: str = ""
    min_face: int = 40
    encoder: str = "resnet18"
    weights: str = ""
    #: Five-point template the faces are aligned to (edge.features.align.TEMPLATES): "arcface" (the paper's
    #: MTCNN-aligned faces) or "fer" (FER2013's looser framing, for encoders trained on it).
    align: str = "arcface"
    face_size: int = 224
    fps: float = 16.0
    segments: int = 8
    per_segment: int = 8
    dim: int = 512

    @property
    def frames(self) -> int:
        return self.segments * self.per_segment


@dataclass(frozen=True)
class StreamProfile:
    rate_hz: float = 2.0
    window_s: float = 4.0


@dataclass(frozen=True)
class ASRProfile:
    """Speech recognition for the profile's language (``edge-run --asr / --asr-model / --language`` override it):
    ``backend`` (edge.asr.BACKEND_NAMES; "auto": Whisper when a model is installed, else pocketsphinx), ``model``
    (a Whisper model: folder, package:NAME, size name or Hub id; "" = the installed package), ``language`` ("" =
    detected per utterance)."""

    backend: str = "auto"
    model: str = ""
    language: str = ""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    classes: tuple[str, ...]
    text: TextProfile
    audio: AudioProfile
    vision: VisionProfile
    lfmim: LFMIMConfig
    checkpoint: str
    stream: StreamProfile
    #: Folder of networks quantized when the profile was packaged ("asset:starter"), used by INT8 builds instead of
    #: calibrating on the user's machine (which has no calibration data); empty: calibrate at build time.
    prequantized: str = ""
    #: Folder that ships every network as ONNX ("asset:starter": MTCNN's and LFMIM's ``<net>.fp32.onnx``; the face and
    #: audio encoders are the ONNX files their weights name): the first run prepares the build without torch.
    shipped: str = ""
    #: Language of the speech and text the profile was trained for ("en", "zh", ...; a Whisper language code), which
    #: speech recognition is asked to transcribe; empty: not stated (the ASR backend's own default).
    language: str = ""
    #: Speech recognition ([asr]); not part of the hash when left at its defaults, so older builds stay valid.
    asr: ASRProfile = ASRProfile()
    source: str = ""  # file it was read from (not part of the hash)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "classes": list(self.classes),
            "text": dataclasses.asdict(self.text), "audio": dataclasses.asdict(self.audio),
            "vision": dataclasses.asdict(self.vision), "lfmim": self.lfmim.to_dict(),
            "checkpoint": self.checkpoint, "stream": dataclasses.asdict(self.stream),
            **({"prequantized": self.prequantized} if self.prequantized else {}),
            **({"shipped": self.shipped} if self.shipped else {}),
            **({"language": self.language} if self.language else {}),
            **({"asr": dataclasses.asdict(self.asr)} if self.asr != ASRProfile() else {}),
        }


def profile_hash(profile: Profile) -> str:
    """SHA-256 of the profile's canonical JSON (everything but the file it came from)."""
    blob = json.dumps(profile.to_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def shipped_profiles() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("edge.profiles").iterdir() if p.name.endswith(".toml"))


def _section(cls, data: Any, name: str, source: str):
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: [{name}] must be a table")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [{name}]: {', '.join(unknown)}; known: {', '.join(known)}")
    values = {}
    for key, value in data.items():
        want = type(getattr(cls(), key))
        if want is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, want) or isinstance(value, bool) != (want is bool):
            raise ConfigError(f"{source}: [{name}] {key} must be {want.__name__}, got {value!r}")
        values[key] = value
    return cls(**values)


def parse_profile(data: Mapping[str, Any], *, source: str) -> Profile:
    known = {"name", "description", "classes", "text", "audio", "vision", "lfmim", "stream", "prequantized", "shipped",
             "language", "asr"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise ConfigError(f"{source}: the profile needs a name")
    text = _section(TextProfile, data.get("text"), "text", source)
    audio = _section(AudioProfile, data.get("audio"), "audio", source)
    vision = _section(VisionProfile, data.get("vision"), "vision", source)
    stream = _section(StreamProfile, data.get("stream"), "stream", source)
    asr = _section(ASRProfile, data.get("asr"), "asr", source)
    from edge.asr.registry import BACKEND_NAMES

    if asr.backend not in BACKEND_NAMES:
        raise ConfigError(f"{source}: [asr] backend must be one of {', '.join(BACKEND_NAMES)}, got {asr.backend!r}")
    classes = tuple(data.get("classes") or LFMIMConfig().classes)
    lfmim = dict(data.get("lfmim") or {})
    checkpoint = str(lfmim.pop("checkpoint", ""))
    try:
        config = LFMIMConfig.from_dict(
            {**lfmim, "classes": classes, "text": {"dim": text.dim, "length": text.tokens},
             "audio": {"dim": audio.dim, "length": audio.frames}, "vision": {"dim": vision.dim, "length": vision.frames}},
            source=f"{source} [lfmim]",
        )
    except ConfigError:
        raise
    if audio.sample_rate <= 0 or audio.window_s <= 0 or vision.fps <= 0 or stream.rate_hz <= 0:
        raise ConfigError(f"{source}: sample_rate, window_s, fps and rate_hz must be positive")
    from edge.features.align import TEMPLATES

    if vision.align not in TEMPLATES:
        raise ConfigError(f"{source}: [vision] align must be one of {', '.join(TEMPLATES)}, got {vision.align!r}")
    prequantized, shipped = data.get("prequantized", ""), data.get("shipped", "")
    for key, value in (("prequantized", prequantized), ("shipped", shipped)):
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string (an asset folder such as \"asset:starter\")")
    language = data.get("language", "")
    if not isinstance(language, str) or (language and not LANGUAGE_CODE.fullmatch(language)):
        raise ConfigError(f"{source}: language must be a language code such as \"en\" or \"zh\" (lower case, 2-3 "
                          f"letters), got {language!r}")
    if not 0.025 <= audio.block_s <= audio.window_s:
        raise ConfigError(f"{source}: [audio] block_s must lie between 0.025 s and window_s ({audio.window_s} s), "
                          f"got {audio.block_s}")
    return Profile(name=data["name"], description=str(data.get("description", "")), classes=classes, text=text,
                   audio=audio, vision=vision, lfmim=config, checkpoint=checkpoint, stream=stream, prequantized=prequantized,
                   shipped=shipped, language=language, asr=asr, source=source)


def load_profile(name_or_path: str | Path) -> Profile:
    """A shipped profile by name (``paper``) or a TOML file by path."""
    text_name = str(name_or_path)
    if text_name in shipped_profiles():
        source = f"edge/profiles/{text_name}.toml"
        raw = resources.files("edge.profiles").joinpath(f"{text_name}.toml").read_text(encoding="utf-8")
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"profile {text_name!r} not found: not a shipped profile "
                              f"({', '.join(shipped_profiles())}) and no such TOML file")
        source, raw = str(path), path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    return parse_profile(data, source=source)


def feature_specs(profile: Profile) -> dict[str, ModalitySpec]:
    return {"text": profile.lfmim.text, "audio": profile.lfmim.audio, "vision": profile.lfmim.vision}
