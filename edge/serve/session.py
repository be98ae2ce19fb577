"""One ``/v1/stream`` connection: a client's media through its own live loop, its results back.

The session speaks the protocol (:mod:`edge.serve.protocol`): ``session.created`` first; ``session.update`` before
the first media; binary media into a :class:`~edge.stream.push.PushSource` feeding a
:class:`~edge.stream.recognizer.Recognizer` that shares the server's networks (started at the first media, with the
options as they are then); every estimate back as ``measurement.result`` through a bounded :class:`Outbox`;
``session.close`` ends the media and gets ``session.closed`` after the last result.  A bad message gets one
``error`` and the session goes on.  Decoding and the recognizer's start and stop run on the server's thread pool,
never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from edge.errors import EdgeError
from edge.serve import protocol as P
from edge.serve.outbox import Outbox
from edge.stream.push import FrameRefused, PushSource

if TYPE_CHECKING:
    from edge.serve.app import Service

log = logging.getLogger("edge")
#: At most one rate_limited error per this many seconds (the drops themselves are all counted).
RATE_NOTICE_S = 1.0
WATCH_S = 0.25


class StreamSession:
    def __init__(self, service: "Service", websocket: Any) -> None:
        self.service, self.ws = service, websocket
        self.id = secrets.token_hex(8)
        self.loop = asyncio.get_running_loop()
        self.options = service.default_options
        self.outbox = Outbox(service.config.send_queue)
        self.recognizer: Any = None
        self.source: PushSource | None = None
        self.recorder: Any = None
        self.last_activity = self.loop.time()
        self.results = self.errors = 0
        self._rate_notice = -float("inf")
        self._close_task: asyncio.Task | None = None
        self.close_reason: str | None = None
        self.started = time.monotonic()

    # -- life cycle ----------------------------------------------------------------------------------------------
    async def run(self) -> None:
        s = self.service
        self.outbox.put_control(P.session_created(self.id, self.options, s.limits, endpoint=P.STREAM_PATH,
                                                  server=s.server_info(), record=s.record_root is not None))
        pump = asyncio.create_task(self.outbox.pump(self.ws), name=f"edge-send-{self.id}")
        watch = asyncio.create_task(self._watch(), name=f"edge-watch-{self.id}")
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self.ws:
                if self._close_task is not None:
                    break
                self.last_activity = self.loop.time()
                await self._handle(message)
        except ConnectionClosed:
            pass
        finally:
            watch.cancel()
            if self._close_task is not None:
                await asyncio.shield(self._close_task)
            else:  # the client went away (mid-utterance or not): free everything, nothing to tell
                self.close_reason = "disconnected"
                await self._stop_recognizer(graceful=False)
            self.outbox.close()
            await self.outbox.drained(1.0)
            pump.cancel()
            # wait for both to finish: until then their frames hold this session (and its loop's memory)
            await asyncio.gather(watch, pump, return_exceptions=True)
            log.info("session %s ended (%s): %s", self.id, self.close_reason, self.stats())

    def request_close(self, reason: str, *, graceful: bool) -> asyncio.Task:
        """Close the session once: (graceful: end the media and wait for the last result), stop its loop, send
        ``session.closed`` and close the connection."""
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._close(reason, graceful), name=f"edge-close-{self.id}")
        return self._close_task

    async def _close(self, reason: str, graceful: bool) -> None:
        self.close_reason = reason
        try:
            await self._stop_recognizer(graceful=graceful)
        except Exception as exc:  # a bug: reported, and the session still closes
            log.exception("session %s: stopping its loop failed", self.id)
            self._error("internal_error", f"stopping the recognition loop failed: {exc}")
        self.outbox.put_control(P.session_closed(reason, self.stats()))
        self.outbox.close()
        await self.outbox.drained(5.0)
        await self.ws.close(1000, reason.replace("_", " "))

    async def _stop_recognizer(self, *, graceful: bool) -> None:
        rec, source = self.recognizer, self.source
        if rec is not None:
            if graceful and source is not None:
                source.end_input()
                finished = await self._in_pool(rec.wait, self.service.config.close_timeout)
                if not finished:
                    log.warning("session %s: the last estimate took over %.0f s; stopping", self.id,
                                self.service.config.close_timeout)
            await self._in_pool(rec.stop)
            self._check_failures()
        if self.recorder is not None:
            await self._in_pool(self.recorder.close)

    async def _watch(self) -> None:
        timeout = self.service.config.idle_timeout
        while self._close_task is None:
            await asyncio.sleep(WATCH_S)
            if self._check_failures():
                self.request_close("internal_error", graceful=False)
            elif timeout and self.loop.time() - self.last_activity > timeout:
                log.info("session %s: no message for %.0f s; closing it", self.id, timeout)
                self.request_close("idle_timeout", graceful=False)

    def _check_failures(self) -> bool:
        """Report a failed stage or source of this session's loop once, as internal_error; True when one failed."""
        rec = self.recognizer
        if rec is None or getattr(self, "_failure_reported", False):
            return False
        stages = [getattr(rec, name, None) for name in ("vision", "audio", "asr")]
        failures = [f"{st.name} stage failed: {st.error}" for st in stages if st is not None and st.error] + list(
            rec.errors)
        if not failures:
            return False
        self._failure_reported = True
        log.error("session %s: %s", self.id, "; ".join(failures))
        self._error("internal_error", f"the recognition loop failed ({failures[0]}); the session ends")
        return True

    def _in_pool(self, fn: Any, *args: Any) -> "asyncio.Future[Any]":
        return self.loop.run_in_executor(self.service.executor, fn, *args)

    # -- messages ------------------------------------------------------------------------------------------------
    def _error(self, code: str, message: str, **extra: Any) -> None:
        self.errors += 1
        self.outbox.put_control(P.error(code, message, **extra))

    async def _handle(self, message: Any) -> None:
        try:
            if isinstance(message, (bytes, bytearray, memoryview)):
                await self._media(bytes(message))
            else:
                self._control(P.decode_text(message, self.service.limits))
        except P.ProtocolError as exc:
            self._error(exc.code, str(exc))

    def _control(self, message: dict[str, Any]) -> None:
        if message["type"] == "session.close":
            self.request_close("client", graceful=True)
            return
        if self.recognizer is not None:
            raise P.ProtocolError("config_invalid", "session.update must come before the first media message; "
                                                    "open a new session to change the options")
        self.options = P.apply_update(self.options, message.get("config"), languages=self.service.models.languages,
                                      limits=self.service.limits)
        self.outbox.put_control(P.session_updated(self.options))

    async def _media(self, data: bytes) -> None:
        kind, t, payload = P.decode_media(data, self.service.limits)
        if self.recognizer is None:
            await self._start()
        try:
            if kind == P.VIDEO:
                if not await self._in_pool(self._push_video, t, payload):
                    self._rate_limited()
            else:
                self.source.push_audio(t, payload)
                if self.recorder is not None:
                    self.recorder.audio(payload)
        except FrameRefused as exc:
            code = "message_too_large" if exc.reason == "too_large" else (
                "invalid_image_frame" if exc.kind == "video" else "invalid_audio_frame")
            self._error(code, str(exc), capture_time=t, reason=exc.reason)

    def _push_video(self, t: float, jpeg: bytes) -> bool:
        accepted = self.source.push_video(t, jpeg)
        if accepted and self.recorder is not None:
            self.recorder.frame(t, jpeg)
        return accepted

    def _rate_limited(self) -> None:
        now = self.loop.time()
        if now - self._rate_notice >= RATE_NOTICE_S:
            self._rate_notice = now
            n = self.source.frames_rate_limited
            self._error("rate_limited", f"video frames closer than 1/{self.options.fps:g} s apart are dropped "
                                        f"({n} so far); send at most {self.options.fps:g} frames per second",
                        dropped=n)

    # -- the loop ------------------------------------------------------------------------------------------------
    async def _start(self) -> None:
        s = self.service
        o = self.options
        text = "text" in o.modalities and s.models.asr is not None
        config = s.run_config.replace(camera="", video="", audio="", rate=o.rate, window=o.window, fps=o.fps,
                                      asr=s.run_config.asr if text else "none")
        from edge.stream.recognizer import Recognizer

        rec = Recognizer(config, engines=s.models.engines, asr=s.models.asr if text else None, vad=s.models.vad,
                         sources=self._sources)
        rec.on_estimate(self._on_estimate)
        try:
            await self._in_pool(rec.start)
        except EdgeError as exc:
            await self._in_pool(rec.stop)
            raise P.ProtocolError("internal_error", f"the recognition loop did not start: {exc}") from None
        self.recognizer = rec
        if s.record_root is not None:
            from edge.serve.record import SessionRecorder

            self.recorder = await self._in_pool(SessionRecorder, s.record_root, self.id, o.to_dict())

    def _sources(self, rec: Any) -> list[Any]:
        o, limits = self.options, self.service.limits
        if "audio" not in o.modalities:
            rec.audio_q.close()  # nothing will come: the audio stage ends at once
        self.source = PushSource(clock=rec.clock, video_queue=rec.video_q if "vision" in o.modalities else None,
                                 audio_queue=rec.audio_q if "audio" in o.modalities else None, max_fps=o.fps,
                                 max_audio_s=limits.max_audio_seconds, max_image_bytes=limits.max_image_bytes,
                                 sample_rate=limits.sample_rate, name=f"push-{self.id}")
        return [self.source]

    def _on_estimate(self, estimate: Any) -> None:
        """On the recognizer's dispatcher thread: hand the estimate to the event loop."""
        try:
            self.loop.call_soon_threadsafe(self._deliver, estimate)
        except RuntimeError:  # the loop has closed: the server is going down
            pass

    def _deliver(self, estimate: Any) -> None:
        rec, source = self.recognizer, self.source
        origin = rec.origin if rec is not None else None
        client_time = source.client_clock.to_client(origin + estimate.media_time) if origin is not None else None
        if client_time is None:  # a tick before the first sample was stamped: there is no media time yet
            return
        dropped = {"frames": float(estimate.dropped.get("frames", 0.0)),
                   "audio_s": float(estimate.dropped.get("audio_s", 0.0)),
                   "frames_rate_limited": float(source.frames_rate_limited),
                   "results": float(self.outbox.results_dropped)}
        self.outbox.put_result(P.measurement_result(estimate, P.ResultContext(self.results, client_time, dropped)))
        self.results += 1

    def stats(self) -> dict[str, Any]:
        src = self.source.stats() if self.source is not None else {}
        return {"results": self.results, "results_dropped": self.outbox.results_dropped,
                "frames": src.get("frames", 0), "frames_rate_limited": src.get("frames_rate_limited", 0),
                "frames_refused": src.get("frames_refused", 0),
                "audio_seconds": round(src.get("audio_samples", 0) / self.service.limits.sample_rate, 3),
                "audio_refused": src.get("audio_refused", 0), "clock_adjustments": src.get("clock_adjustments", 0),
                "errors": self.errors, "seconds": round(time.monotonic() - self.started, 3)}
