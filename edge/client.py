"""A small Python client of ``edge-serve`` (protocol ``lfmim-edge.v1``, ``docs/protocol.md``): send media, iterate
results.  Synchronous (:class:`Client`, one thread may send while another reads) or asyncio (:class:`AsyncClient`).

    from edge.client import Client

    with Client("ws://127.0.0.1:8765/v1/stream") as client:      # token=... where the server has one
        client.update(rate=2.0)                                   # optional, before the first media
        client.send_image(t, jpeg_bytes)                          # t: capture time, seconds on your clock
        client.send_audio(t, samples)                             # 16 kHz mono: int16 / float array or PCM bytes
        for result in client.results(timeout=5):                  # measurement.result dicts
            print(result["fused"] and result["fused"]["label"])

Needs ``websockets`` (``pip install 'lfmim-edge[serve]'``); ``send_frame`` (an RGB array) needs OpenCV.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Iterator

import numpy as np

from edge._lazy import lazy_import
from edge.errors import EdgeError
from edge.serve.protocol import AUDIO, VIDEO, encode_media

__all__ = ["AsyncClient", "Client", "ClientError", "jpeg", "pcm16"]


class ClientError(EdgeError):
    """The server refused something (``code`` from its error message) or the session did not open."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def pcm16(samples: Any) -> bytes:
    """16 kHz mono samples (int16, or float in [-1, 1]) or ready PCM s16le bytes -> PCM s16le bytes."""
    if isinstance(samples, (bytes, bytearray, memoryview)):
        return bytes(samples)
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ClientError(f"audio must be mono samples of shape (n,), got shape {x.shape}")
    if x.dtype != np.int16:
        x = np.round(np.clip(x.astype(np.float64), -1.0, 32767 / 32768) * 32768.0).astype(np.int16)
    return x.astype("<i2").tobytes()


def jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    """An RGB uint8 frame (H, W, 3) as JPEG bytes (OpenCV)."""
    cv2 = lazy_import("cv2", purpose="encoding frames as JPEG")
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ClientError(f"OpenCV could not encode a frame of shape {np.shape(rgb)} as JPEG")
    return data.tobytes()


def _headers(token: str | None) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {token}"} if token else None


def _parse(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, str):
        raise ClientError("the server sent a binary message; it sends JSON only (is this an edge-serve URL?)")
    return json.loads(raw)


def _open_error(exc: Exception, url: str) -> ClientError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 401:
        return ClientError(f"{url}: the server wants a token (pass token=...)", "unauthorized")
    if status is not None:
        body = getattr(exc.response, "body", b"").decode("utf-8", "replace").strip()
        return ClientError(f"{url}: HTTP {status}: {body}", f"http_{status}")
    return ClientError(f"cannot connect to {url}: {exc}; is edge-serve running?", "unreachable")


class _State:
    """What both clients keep: the session's first message, its last, and the errors the server sent."""

    def __init__(self) -> None:
        self.session: dict[str, Any] = {}
        self.closed: dict[str, Any] | None = None
        self.errors: list[dict[str, Any]] = []

    @property
    def session_id(self) -> str:
        return self.session.get("session_id", "")

    def _created(self, message: dict[str, Any]) -> dict[str, Any]:
        if message.get("type") != "session.created":
            raise ClientError(f"expected session.created first, got {message.get('type')!r}")
        self.session = message
        return message

    def _sort(self, message: dict[str, Any]) -> str:
        """'result', 'error' (kept in ``errors``), 'closed' (kept in ``closed``) or 'other'."""
        kind = message.get("type")
        if kind == "measurement.result":
            return "result"
        if kind == "error":
            self.errors.append(message)
            return "error"
        if kind == "session.closed":
            self.closed = message
            return "closed"
        return "other"


class Client(_State):
    """Blocking client over ``websockets.sync``; a context manager."""

    def __init__(self, url: str = "ws://127.0.0.1:8765/v1/stream", *, token: str | None = None,
                 open_timeout: float = 10.0) -> None:
        super().__init__()
        self.url, self.token, self.open_timeout = url, token, open_timeout
        self.ws: Any = None

    def connect(self) -> dict[str, Any]:
        sync = lazy_import("websockets.sync.client", purpose="edge.client (pip install 'lfmim-edge[serve]')")
        import inspect

        # websockets 17 turned a bare connect() into a reconnecting iterator; legacy=True keeps one connection
        direct = {"legacy": True} if "legacy" in inspect.signature(sync.connect).parameters else {}
        try:
            self.ws = sync.connect(self.url, additional_headers=_headers(self.token), open_timeout=self.open_timeout,
                                   compression=None, max_size=None, **direct)
        except Exception as exc:  # InvalidStatus, OSError, TimeoutError: one message that says what to do
            raise _open_error(exc, self.url) from None
        return self._created(_parse(self.ws.recv(timeout=self.open_timeout)))

    def __enter__(self) -> "Client":
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.ws is not None:
            self.ws.close()

    def update(self, timeout: float = 10.0, **config: Any) -> dict[str, Any]:
        """Change options before the first media; returns the effective options (ClientError when refused)."""
        self.ws.send(json.dumps({"type": "session.update", "config": config}))
        while True:
            message = _parse(self.ws.recv(timeout=timeout))
            kind = self._sort(message)
            if kind == "error" and message["code"] == "config_invalid":
                raise ClientError(message["message"], message["code"])
            if message.get("type") == "session.updated":
                return message["config"]

    def send_audio(self, t: float, samples: Any) -> None:
        self.ws.send(encode_media(AUDIO, t, pcm16(samples)))

    def send_image(self, t: float, data: bytes) -> None:
        self.ws.send(encode_media(VIDEO, t, data))

    def send_frame(self, t: float, rgb: np.ndarray, quality: int = 80) -> None:
        self.send_image(t, jpeg(rgb, quality))

    def messages(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Every message from the server, until the connection ends or ``timeout`` s pass without one."""
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                message = _parse(self.ws.recv(timeout=timeout))
            except (ConnectionClosed, TimeoutError):
                return
            self._sort(message)
            yield message

    def results(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """``measurement.result`` messages until ``session.closed`` (errors go to ``errors``)."""
        for message in self.messages(timeout):
            if message["type"] == "measurement.result":
                yield message
            elif message["type"] == "session.closed":
                return

    def end(self) -> None:
        """No more media: the server answers with its last results, then ``session.closed``."""
        self.ws.send(json.dumps({"type": "session.close"}))

    def close(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """:meth:`end`, then the results that still come; ``closed`` holds the server's session.closed."""
        self.end()
        rest = list(self.results(timeout))
        self.ws.close()
        return rest


class AsyncClient(_State):
    """The same over ``websockets.asyncio``; an async context manager."""

    def __init__(self, url: str = "ws://127.0.0.1:8765/v1/stream", *, token: str | None = None,
                 open_timeout: float = 10.0) -> None:
        super().__init__()
        self.url, self.token, self.open_timeout = url, token, open_timeout
        self.ws: Any = None

    async def connect(self) -> dict[str, Any]:
        import asyncio

        client = lazy_import("websockets.asyncio.client", purpose="edge.client (pip install 'lfmim-edge[serve]')")
        try:
            self.ws = await client.connect(self.url, additional_headers=_headers(self.token),
                                           open_timeout=self.open_timeout, compression=None, max_size=None)
        except Exception as exc:  # InvalidStatus, OSError, TimeoutError
            raise _open_error(exc, self.url) from None
        return self._created(_parse(await asyncio.wait_for(self.ws.recv(), self.open_timeout)))

    async def __aenter__(self) -> "AsyncClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def update(self, **config: Any) -> dict[str, Any]:
        await self.ws.send(json.dumps({"type": "session.update", "config": config}))
        while True:
            message = _parse(await self.ws.recv())
            kind = self._sort(message)
            if kind == "error" and message["code"] == "config_invalid":
                raise ClientError(message["message"], message["code"])
            if message.get("type") == "session.updated":
                return message["config"]

    async def send_audio(self, t: float, samples: Any) -> None:
        await self.ws.send(encode_media(AUDIO, t, pcm16(samples)))

    async def send_image(self, t: float, data: bytes) -> None:
        await self.ws.send(encode_media(VIDEO, t, data))

    async def send_frame(self, t: float, rgb: np.ndarray, quality: int = 80) -> None:
        await self.send_image(t, jpeg(rgb, quality))

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                message = _parse(await self.ws.recv())
            except ConnectionClosed:
                return
            self._sort(message)
            yield message

    async def results(self) -> AsyncIterator[dict[str, Any]]:
        async for message in self.messages():
            if message["type"] == "measurement.result":
                yield message
            elif message["type"] == "session.closed":
                return

    async def end(self) -> None:
        await self.ws.send(json.dumps({"type": "session.close"}))

    async def close(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        import asyncio

        await self.end()

        async def rest() -> list[dict[str, Any]]:
            return [r async for r in self.results()]

        try:
            return await asyncio.wait_for(rest(), timeout)
        finally:
            await self.ws.close()
