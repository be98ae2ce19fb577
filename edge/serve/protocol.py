"""The WebSocket protocol of ``edge-serve`` (version :data:`PROTOCOL`): message framing, limits, validation and the
messages the server sends.  ``docs/protocol.md`` is its description; ``edge/serve/schemas/`` holds a JSON Schema per
message.  No third-party imports: the Python client (:mod:`edge.client`) uses this module too.

Binary messages carry media: one kind byte (``A`` audio, ``V`` video), the capture time as a little-endian float64
(seconds, the client's clock), then the payload (PCM s16le mono 16 kHz, or one complete JPEG).  Text messages are
JSON objects with a ``type``.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Sequence

from edge.errors import EdgeError

PROTOCOL = "lfmim-edge.v1"
STREAM_PATH = "/v1/stream"
ESTIMATES_PATH = "/v1/estimates"
HEALTH_PATH = "/v1/health"
SCHEMAS_PATH = "/v1/schemas/"

AUDIO, VIDEO = b"A", b"V"
_HEADER = struct.Struct("<cd")
HEADER_BYTES = _HEADER.size  # 9

MODALITIES = ("text", "audio", "vision")
ERROR_CODES = ("invalid_audio_frame", "invalid_image_frame", "message_too_large", "rate_limited", "config_invalid",
               "invalid_message", "internal_error")
CLOSE_REASONS = ("client", "idle_timeout", "source_ended", "internal_error", "server_shutdown")
#: Messages the server sends, and those a client may send (each has a schema of that name).
SERVER_MESSAGES = ("session.created", "session.updated", "measurement.result", "error", "session.closed")
CLIENT_MESSAGES = ("session.update", "session.close")


class ProtocolError(EdgeError):
    """A client message the server refuses; ``code`` is one of :data:`ERROR_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Limits:
    """What one message may hold (the server reports them in ``session.created``)."""

    max_image_bytes: int = 2 * 1024 * 1024
    max_audio_seconds: float = 1.0
    max_fps: float = 16.0
    max_text_bytes: int = 64 * 1024
    #: The transport's own bound: a message larger than this closes the connection (code 1009), as the server must
    #: not buffer it; anything between the limits above and this is refused with message_too_large.
    max_message_bytes: int = 8 * 1024 * 1024
    sample_rate: int = 16_000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- media framing ----------------------------------------------------------------------------------------------
def encode_media(kind: bytes, t: float, payload: bytes) -> bytes:
    """One binary media message: ``kind`` (:data:`AUDIO` or :data:`VIDEO`), capture time ``t`` (s), payload."""
    if kind not in (AUDIO, VIDEO):
        raise ValueError(f"media kind must be {AUDIO!r} or {VIDEO!r}, got {kind!r}")
    return _HEADER.pack(kind, float(t)) + bytes(payload)


def decode_media(data: bytes, limits: Limits = Limits()) -> tuple[bytes, float, bytes]:
    """(kind, capture time, payload) of a binary message; :class:`ProtocolError` for a malformed or oversize one."""
    if len(data) < HEADER_BYTES:
        raise ProtocolError("invalid_message", f"a binary message of {len(data)} bytes is shorter than its "
                                               f"{HEADER_BYTES}-byte header (kind byte A or V, float64 capture time)")
    kind, t = _HEADER.unpack_from(data)
    if kind not in (AUDIO, VIDEO):
        raise ProtocolError("invalid_message", f"unknown media kind byte {kind!r}; expected b'A' (audio) or b'V' "
                                               f"(video)")
    code = "invalid_audio_frame" if kind == AUDIO else "invalid_image_frame"
    if not math.isfinite(t):
        raise ProtocolError(code, f"capture time {t!r} is not a finite number of seconds")
    payload = bytes(memoryview(data)[HEADER_BYTES:])
    if kind == VIDEO and len(payload) > limits.max_image_bytes:
        raise ProtocolError("message_too_large", f"a JPEG of {len(payload)} bytes is over the limit of "
                                                 f"{limits.max_image_bytes} bytes; send smaller frames")
    audio_limit = int(round(limits.max_audio_seconds * limits.sample_rate)) * 2
    if kind == AUDIO and len(payload) > audio_limit:
        raise ProtocolError("message_too_large", f"{len(payload) // 2} audio samples is more than "
                                                 f"{limits.max_audio_seconds:g} s at {limits.sample_rate} Hz; "
                                                 f"send at most {audio_limit // 2} samples per message")
    return kind, t, payload


def decode_text(data: str, limits: Limits = Limits()) -> dict[str, Any]:
    """A client's JSON message as a dict with a known ``type``; :class:`ProtocolError` otherwise."""
    if len(data.encode("utf-8", "surrogatepass")) > limits.max_text_bytes:
        raise ProtocolError("message_too_large", f"a text message over {limits.max_text_bytes} bytes; control "
                                                 f"messages are small JSON objects")
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise ProtocolError("invalid_message", f"a text message that is not JSON ({exc.msg} at character "
                                               f"{exc.pos}); send a JSON object with a \"type\"") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("invalid_message", "a text message must be a JSON object with a string \"type\"")
    if message["type"] not in CLIENT_MESSAGES:
        raise ProtocolError("invalid_message", f"unknown message type {message['type']!r}; clients send "
                                               f"{', '.join(CLIENT_MESSAGES)} (media go as binary messages)")
    return message


# -- session options ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionOptions:
    """What ``session.update`` may change before the first media: estimates per second, seconds of evidence per
    estimate, spoken language, modalities, and video frames per second taken from the client."""

    rate: float
    window: float
    language: str
    modalities: tuple[str, ...] = MODALITIES
    fps: float = 16.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return d


#: Bounds of the numeric options (inclusive).
BOUNDS = {"rate": (0.25, 10.0), "window": (0.5, 30.0), "fps": (1.0, 16.0)}
UPDATABLE = ("rate", "window", "language", "modalities", "fps")


def _number(name: str, value: Any, limit_fps: float) -> float:
    low, high = BOUNDS[name]
    if name == "fps":
        high = min(high, limit_fps)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError("config_invalid", f"config.{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ProtocolError("config_invalid", f"config.{name} = {value!r} is outside {low:g}..{high:g}")
    return float(value)


def apply_update(current: SessionOptions, config: Any, *, languages: Sequence[str], limits: Limits) -> SessionOptions:
    """``current`` with the changes of a ``session.update`` config; :class:`ProtocolError` (config_invalid) naming
    the first bad field."""
    if not isinstance(config, Mapping):
        raise ProtocolError("config_invalid", "session.update needs \"config\": an object of the options to change")
    unknown = sorted(set(config) - set(UPDATABLE))
    if unknown:
        raise ProtocolError("config_invalid", f"unknown config option(s) {', '.join(map(repr, unknown))}; the "
                                              f"options are {', '.join(UPDATABLE)}")
    changes: dict[str, Any] = {}
    for name in ("rate", "window", "fps"):
        if name in config:
            changes[name] = _number(name, config[name], limits.max_fps)
    if "language" in config:
        language = config["language"]
        if not isinstance(language, str) or language not in languages:
            offered = ", ".join(languages) or "none (speech recognition is off)"
            raise ProtocolError("config_invalid", f"config.language {language!r} is not one this server "
                                                  f"recognises: {offered}")
        changes["language"] = language
    if "modalities" in config:
        value = config["modalities"]
        if (not isinstance(value, list) or not value or len(set(map(str, value))) != len(value)
                or any(m not in MODALITIES for m in value)):
            raise ProtocolError("config_invalid", f"config.modalities must be a non-empty list of distinct names "
                                                  f"among {', '.join(MODALITIES)}, got {value!r}")
        if "text" in value and "audio" not in value:
            raise ProtocolError("config_invalid", "config.modalities: text comes from speech recognition of the "
                                                  "audio; include audio, or leave text out")
        changes["modalities"] = tuple(m for m in MODALITIES if m in value)
    return replace(current, **changes)


# -- messages the server sends -------------------------------------------------------------------------------------
def session_created(session_id: str, options: SessionOptions, limits: Limits, *, endpoint: str, server: dict,
                    record: bool) -> dict[str, Any]:
    return {"type": "session.created", "session_id": session_id, "protocol": PROTOCOL, "endpoint": endpoint,
            "config": options.to_dict(), "limits": limits.to_dict(), "server": dict(server), "record": bool(record)}


def session_updated(options: SessionOptions) -> dict[str, Any]:
    return {"type": "session.updated", "config": options.to_dict()}


def error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    return {"type": "error", "code": code, "message": message, **extra}


def session_closed(reason: str, stats: Mapping[str, Any]) -> dict[str, Any]:
    if reason not in CLOSE_REASONS:
        raise ValueError(f"unknown close reason {reason!r}")
    return {"type": "session.closed", "reason": reason, "stats": dict(stats)}


def _modality(probs: Sequence[float] | None, classes: Sequence[str]) -> dict[str, Any] | None:
    if probs is None:
        return None
    best = max(range(len(probs)), key=lambda i: probs[i])
    return {"label": classes[best],
            "probabilities": [{"name": c, "probability": round(float(p), 5)} for c, p in zip(classes, probs)]}


@dataclass
class ResultContext:
    """What a result needs beside the estimate: its index in the session, media time on the client's clock (None
    where there is no client clock), and the drop counters."""

    index: int
    media_time: float
    dropped: dict[str, float] = field(default_factory=dict)


def measurement_result(estimate: Any, ctx: ResultContext) -> dict[str, Any]:
    """A ``measurement.result`` from an :class:`~edge.stream.estimate.Estimate`."""
    classes = estimate.classes
    out: dict[str, Any] = {"type": "measurement.result", "index": ctx.index, "media_time": round(ctx.media_time, 4)}
    for name in ("fused", *MODALITIES):
        out[name] = _modality(estimate.probs.get(name), classes)
    out["transcript"] = estimate.transcript
    out["available"] = {m: bool(estimate.available.get(m, False)) for m in MODALITIES}
    out["age_s"] = {m: None if estimate.age_s.get(m) is None else round(float(estimate.age_s[m]), 4)
                    for m in MODALITIES}
    out["latency_ms"] = {k: round(float(v), 3) for k, v in estimate.latency_ms.items()}
    out["faces"] = {k: int(v) for k, v in estimate.faces.items()}
    out["dropped"] = {k: float(v) for k, v in ctx.dropped.items()}
    return out


def dumps(message: Mapping[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
