"""The service: one asyncio event loop running a ``websockets`` server over the shared models.

HTTP requests are answered in the handshake hook (``process_request``): the kiosk page and its files at ``/``,
the message schemas at ``/v1/schemas/<type>.json``, ``/v1/health``; the token (HTTP 401), the page's origin
(HTTP 403) and the session limit (HTTP 503) are checked there before a WebSocket opens.  ``/v1/stream`` runs a
:class:`~edge.serve.session.StreamSession` per connection; ``/v1/estimates`` subscribes to the server's own capture
(:class:`~edge.serve.estimates.EstimatesFeed`).  :func:`run_server` blocks (``edge-serve``);
:class:`BackgroundServer` runs the same service on a thread of its own (tests, or a Python kiosk embedding it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from importlib import resources
from typing import Any, Callable
from urllib.parse import urlsplit

import edge
from edge._lazy import lazy_import
from edge.errors import InputError
from edge.serve import auth
from edge.serve import protocol as P
from edge.serve.config import ServeConfig
from edge.serve.resources import SharedModels, open_shared
from edge.stream.config import RunConfig

log = logging.getLogger("edge")

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".json": "application/json", ".svg": "image/svg+xml"}
#: The page may load its own files and talk to this server only.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
                               "media-src 'self' blob: mediastream:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _web_files() -> dict[str, tuple[bytes, str]]:
    """URL path -> (body, content type) of the page's files, read once from the package (``edge/web/``)."""
    files: dict[str, tuple[bytes, str]] = {}
    for item in resources.files("edge.web").iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1] if "." in item.name else ""
        if item.is_file() and suffix in _TYPES:
            files["/" + item.name] = (item.read_bytes(), _TYPES[suffix])
    if "/index.html" not in files:
        raise InputError("the kiosk page (edge/web/index.html) is missing from this installation; reinstall "
                         "lfmim-edge")
    files["/"] = files["/index.html"]
    return files


class Service:
    """Everything the connections share; built once, before the server listens."""

    def __init__(self, config: ServeConfig, run_config: RunConfig, models: SharedModels,
                 token: str | None) -> None:
        from edge.serve.estimates import EstimatesFeed
        from edge.serve.record import check_record_dir

        self.config, self.run_config, self.models, self.token = config, run_config, models, token
        profile = models.profile
        self.limits = P.Limits(sample_rate=profile.audio.sample_rate)
        fps = min(run_config.fps or profile.vision.fps, self.limits.max_fps)
        modalities = P.MODALITIES if models.asr is not None else ("audio", "vision")
        self.default_options = P.SessionOptions(rate=run_config.rate or profile.stream.rate_hz,
                                                window=run_config.window or profile.stream.window_s,
                                                language=models.language, modalities=modalities, fps=float(fps))
        self.record_root = check_record_dir(config.record) if config.record else None
        self.executor = ThreadPoolExecutor(max_workers=max(4, 2 * config.max_sessions),
                                           thread_name_prefix="edge-serve")
        self.sessions: dict[str, Any] = {}
        self.feed = EstimatesFeed(self) if (run_config.camera or run_config.video) else None
        self.files = _web_files()
        self.started = time.monotonic()
        self.counters = {"sessions": 0, "refused_token": 0, "refused_origin": 0, "refused_busy": 0}

    def server_info(self) -> dict[str, Any]:
        return {"version": edge.__version__, "profile": self.models.profile.name,
                "classes": list(self.models.profile.classes), "languages": list(self.models.languages),
                "idle_timeout_s": self.config.idle_timeout or None, "random_weights": self.models.random_weights}

    # -- HTTP, in the handshake ----------------------------------------------------------------------------------
    @staticmethod
    def _response(connection: Any, status: HTTPStatus, body: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> Any:
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        fields = [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Connection", "close"),
                  *(headers or {}).items()]
        return Response(status.value, status.phrase, Headers(fields), body)

    def _refuse(self, connection: Any, status: HTTPStatus, text: str, counter: str | None = None,
                headers: dict[str, str] | None = None) -> Any:
        if counter:
            self.counters[counter] += 1
        return self._response(connection, status, (text + "\n").encode(), "text/plain; charset=utf-8", headers)

    def process_request(self, connection: Any, request: Any) -> Any:
        path = urlsplit(request.path).path
        if path in self.files:
            body, kind = self.files[path]
            return self._response(connection, HTTPStatus.OK, body, kind, _PAGE_HEADERS)
        if path.startswith(P.SCHEMAS_PATH) and path.endswith(".json"):
            from edge.serve.schema import schema_names, schema_text

            name = path[len(P.SCHEMAS_PATH):-len(".json")]
            if name in schema_names():
                return self._response(connection, HTTPStatus.OK, schema_text(name).encode(), "application/json")
        if path not in (P.STREAM_PATH, P.ESTIMATES_PATH, P.HEALTH_PATH):
            return self._refuse(connection, HTTPStatus.NOT_FOUND, f"edge-serve: no {path} here; the page is at /, "
                                                                  f"the stream at {P.STREAM_PATH}")
        presented = auth.presented_token(request.path, request.headers.get("Authorization"))
        if not auth.token_ok(self.token, presented):
            return self._refuse(connection, HTTPStatus.UNAUTHORIZED,
                                "edge-serve: a valid token is required: send Authorization: Bearer TOKEN or add "
                                "?token=TOKEN", "refused_token", {"WWW-Authenticate": 'Bearer realm="edge-serve"'})
        if not auth.origin_ok(request.headers.get("Origin"), request.headers.get("Host"), self.config.origins):
            return self._refuse(connection, HTTPStatus.FORBIDDEN,
                                f"edge-serve: pages from {request.headers.get('Origin')} may not connect; start "
                                f"edge-serve with --allow-origin to allow them", "refused_origin")
        if path == P.HEALTH_PATH:
            body = json.dumps({"status": "ok", "protocol": P.PROTOCOL, "sessions": len(self.sessions),
                               "max_sessions": self.config.max_sessions, "profile": self.models.profile.name,
                               "estimates_feed": self.feed is not None, "record": self.record_root is not None,
                               "uptime_s": round(time.monotonic() - self.started, 1),
                               "counters": self.counters}).encode()
            return self._response(connection, HTTPStatus.OK, body, "application/json", {"Cache-Control": "no-store"})
        if path == P.ESTIMATES_PATH and self.feed is None:
            return self._refuse(connection, HTTPStatus.NOT_FOUND, "edge-serve: this server has no capture of its "
                                                                  "own; start it with --camera 0 or --video FILE")
        if path == P.STREAM_PATH and len(self.sessions) >= self.config.max_sessions:
            return self._refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE,
                                f"edge-serve: all {self.config.max_sessions} sessions are in use (--max-sessions); "
                                f"try again later", "refused_busy", {"Retry-After": "5"})
        return None

    # -- WebSocket connections -----------------------------------------------------------------------------------
    async def handler(self, websocket: Any) -> None:
        path = urlsplit(websocket.request.path).path
        sock = websocket.transport.get_extra_info("socket")
        if self.config.send_buffer and sock is not None:
            import socket

            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.send_buffer)
        if path == P.ESTIMATES_PATH:
            await self.feed.subscribe(websocket)
            return
        if len(self.sessions) >= self.config.max_sessions:  # two handshakes raced past the check
            await websocket.close(1013, "too many sessions")
            return
        from edge.serve.session import StreamSession

        session = StreamSession(self, websocket)
        self.sessions[session.id] = session
        self.counters["sessions"] += 1
        log.info("session %s opened (%d open)", session.id, len(self.sessions))
        try:
            await session.run()
        except Exception as exc:  # a bug: reported to the client and the log, never silent
            log.exception("session %s failed", session.id)
            try:
                await websocket.send(P.dumps(P.error("internal_error", f"the server failed: {exc}")))
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass
            if session.recognizer is not None:
                await asyncio.get_running_loop().run_in_executor(self.executor, session.recognizer.stop)
        finally:
            self.sessions.pop(session.id, None)
            # once this handler has returned, nothing holds the session: free its cycles and give the memory back
            asyncio.get_running_loop().call_soon(self._release_memory)

    def _release_memory(self) -> None:
        from edge.serve.memory import release

        def done(future: asyncio.Future) -> None:
            if future.exception() is not None:  # never silent (it would be a bug in edge.serve.memory)
                log.error("releasing a session's memory failed: %r", future.exception())

        try:
            asyncio.get_running_loop().run_in_executor(self.executor, release).add_done_callback(done)
        except RuntimeError:  # the service is shutting down (its pool is closed): the process's end frees it all
            pass

    # -- running -------------------------------------------------------------------------------------------------
    async def main(self, stop: asyncio.Event, ready: Callable[[str, int], None] | None = None) -> None:
        ws = lazy_import("websockets.asyncio.server", purpose="edge-serve (pip install 'lfmim-edge[serve]')")
        from edge.serve.memory import fix_mmap_threshold, limit_arenas

        limit_arenas()  # sessions come and go with their threads: keep the allocator's arenas few (edge.serve.memory)
        fix_mmap_threshold()  # and large buffers unmapped when freed, not fragmenting the heap
        loop = asyncio.get_running_loop()
        if self.feed is not None:
            await loop.run_in_executor(self.executor, self.feed.start, loop)
        server = await ws.serve(self.handler, self.config.host, self.config.port,
                                process_request=self.process_request, compression=None,
                                max_size=self.limits.max_message_bytes, max_queue=32, write_limit=2 ** 16,
                                server_header=f"edge-serve/{edge.__version__}")
        try:
            port = server.sockets[0].getsockname()[1]
            if ready is not None:
                ready(self.config.host, port)
            await stop.wait()
            for session in list(self.sessions.values()):
                session.request_close("server_shutdown", graceful=False)
            closing = [s._close_task for s in list(self.sessions.values()) if s._close_task is not None]
            if closing:
                await asyncio.wait(closing, timeout=10.0)
        finally:
            server.close()
            await server.wait_closed()
            if self.feed is not None:
                await loop.run_in_executor(self.executor, self.feed.stop)
            self.executor.shutdown(wait=True)


def prepare(config: ServeConfig, run_config: RunConfig) -> Service:
    """Check the options, then load (building on first use) the shared models: everything before listening."""
    lazy_import("websockets", purpose="edge-serve (pip install 'lfmim-edge[serve]')")
    token = auth.resolve_token(config.token or None)
    auth.check_binding(config.host, token)
    if run_config.camera and run_config.video:
        raise InputError("choose one capture for /v1/estimates: --camera or --video, not both")
    models = open_shared(run_config.replace(threads=config.threads))
    try:
        return Service(config, run_config, models, token)
    except BaseException:
        models.close()
        raise


def run_server(service: Service, ready: Callable[[str, int], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM (blocking; the main thread's signal handlers are used)."""

    async def body() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await service.main(stop, ready)

    try:
        asyncio.run(body())
    finally:
        service.models.close()


class BackgroundServer:
    """The service on a thread of its own: ``with BackgroundServer(service) as srv: srv.url`` ..."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.port: int | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="edge-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.service.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.service.config.host}:{self.port}"

    def _main(self) -> None:
        async def body() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.service.main(self._stop, self._on_ready)

        try:
            asyncio.run(body())
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc
            log.exception("edge-serve stopped with an error")
        finally:
            self._ready.set()

    def _on_ready(self, host: str, port: int) -> None:
        self.port = port
        self._ready.set()

    def start(self, timeout: float = 120.0) -> "BackgroundServer":
        self._thread.start()
        if not self._ready.wait(timeout) or self.port is None:
            raise RuntimeError(f"edge-serve did not start: {self._error!r}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._error is not None:
            raise RuntimeError(f"edge-serve failed: {self._error!r}") from self._error

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
