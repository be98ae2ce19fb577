"""``edge-serve``'s own options (the live loop's come from :class:`~edge.stream.config.RunConfig`): one frozen
dataclass with the defaults in one place; the CLI only fills it in (a test checks flags and fields agree)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edge.errors import InputError

HELP = {
    "host": "address to listen on; anything but loopback (127.0.0.1, ::1, localhost) needs --token",
    "port": "TCP port (0: any free port, printed at start)",
    "token": "clients must present this secret (Authorization: Bearer TOKEN, or ?token=TOKEN); default: "
             "$LFMIM_EDGE_TOKEN; none on loopback",
    "allow_origin": "comma-separated web origins besides this server's own whose pages may connect "
                    "(e.g. https://kiosk.example); '*' allows any",
    "record": "store every session's media (JPEG frames, a WAV file) under this folder; off by default: nothing "
              "is stored anywhere",
    "idle_timeout": "close a /v1/stream session after this many seconds without a message (0: never)",
    "max_sessions": "concurrent /v1/stream sessions; more are refused at the handshake (HTTP 503)",
    "send_queue": "results kept for a client that reads slowly; beyond it the oldest are dropped (counted)",
    "threads": "ONNX Runtime threads per network; sessions run in parallel, so 1 is best on small CPUs",
    "send_buffer": "kernel send buffer per connection in bytes (SO_SNDBUF; 0: the system's): small keeps a slow "
                   "reader's results fresh, the oldest being dropped from the send queue instead of waiting",
    "close_timeout": "seconds a session.close waits for the last result before stopping the loop",
}


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = ""
    allow_origin: str = ""
    record: str = ""
    idle_timeout: float = 60.0
    max_sessions: int = 8
    send_queue: int = 16
    threads: int = 1
    close_timeout: float = 15.0
    send_buffer: int = 65536

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port {self.port}: expected 0..65535")
        for name in ("idle_timeout", "close_timeout"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if self.send_buffer < 0:
            raise InputError(f"--send-buffer must not be negative, got {self.send_buffer}")
        for name in ("max_sessions", "send_queue", "threads"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.allow_origin.split(",") if o.strip())

    def replace(self, **changes) -> "ServeConfig":
        return dataclasses.replace(self, **changes)
