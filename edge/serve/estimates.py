"""``/v1/estimates``: read-only subscribers to the server's own capture (``edge-serve --camera 0`` or ``--video
FILE``).  One :class:`~edge.stream.recognizer.Recognizer` over that source, sharing the server's networks; every
estimate goes to every subscriber's own bounded :class:`~edge.serve.outbox.Outbox`.  ``media_time`` counts seconds
from the start of the server's capture.  When the source ends (the end of the file), subscribers get
``session.closed`` with reason ``source_ended``."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, Any

from edge.serve import protocol as P
from edge.serve.outbox import Outbox

if TYPE_CHECKING:
    from edge.serve.app import Service

log = logging.getLogger("edge")


class EstimatesFeed:
    def __init__(self, service: "Service") -> None:
        self.service = service
        self.recognizer: Any = None
        self.subscribers: set[Outbox] = set()
        self.ended = False
        self.index = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def options(self) -> P.SessionOptions:
        rec = self.recognizer
        base = self.service.default_options
        if rec is None:
            return base
        return P.SessionOptions(rate=float(rec.rate), window=float(rec.window), language=base.language,
                                modalities=P.MODALITIES, fps=float(rec.fps))

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the capture and start its loop (blocking: called once at server start, before listening)."""
        from edge.stream.recognizer import Recognizer

        s = self.service
        self.loop = loop
        rec = Recognizer(s.run_config, engines=s.models.engines, asr=s.models.asr, vad=s.models.vad)
        rec.on_estimate(lambda e: self._threadsafe(self._fanout, e))
        rec.start()
        self.recognizer = rec
        import threading

        threading.Thread(target=self._wait_end, name="edge-estimates-end", daemon=True).start()

    def _threadsafe(self, fn: Any, *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop has closed: the server is going down
            pass

    def _wait_end(self) -> None:
        self.recognizer.wait()
        self._threadsafe(self._end)

    def _fanout(self, estimate: Any) -> None:
        dropped = {"frames": float(estimate.dropped.get("frames", 0.0)),
                   "audio_s": float(estimate.dropped.get("audio_s", 0.0))}
        for outbox in list(self.subscribers):
            message = P.measurement_result(estimate, P.ResultContext(
                self.index, float(estimate.media_time), {**dropped, "results": float(outbox.results_dropped)}))
            outbox.put_result(message)
        self.index += 1

    def _end(self) -> None:
        self.ended = True
        errors = list(self.recognizer.errors)
        for error in errors:
            log.error("the server's capture failed: %s", error)
        for outbox in list(self.subscribers):
            if errors:
                outbox.put_control(P.error("internal_error", f"the server's capture failed: {errors[0]}"))
            outbox.put_control(P.session_closed("source_ended", {"results": self.index}))
            outbox.close()

    def stop(self) -> None:
        if self.recognizer is not None:
            self.recognizer.stop()

    async def subscribe(self, websocket: Any) -> None:
        """Serve one subscriber until it leaves, sends session.close, or the source ends."""
        from websockets.exceptions import ConnectionClosed

        s = self.service
        outbox = Outbox(s.config.send_queue)
        session_id = secrets.token_hex(8)
        outbox.put_control(P.session_created(session_id, self.options, s.limits, endpoint=P.ESTIMATES_PATH,
                                             server=s.server_info(), record=False))
        if self.ended:
            outbox.put_control(P.session_closed("source_ended", {"results": 0}))
            outbox.close()
        else:
            self.subscribers.add(outbox)
        pump = asyncio.create_task(outbox.pump(websocket), name=f"edge-send-{session_id}")
        receive = asyncio.create_task(self._read(websocket, outbox), name=f"edge-read-{session_id}")
        try:
            await asyncio.wait({pump, receive}, return_when=asyncio.FIRST_COMPLETED)
            if outbox.closed:  # session.close or the end of the source: send what is queued, then close
                await asyncio.wait({pump}, timeout=5.0)
                await websocket.close(1000)
        except ConnectionClosed:
            pass
        finally:
            self.subscribers.discard(outbox)
            for task in (pump, receive):
                task.cancel()

    async def _read(self, websocket: Any, outbox: Outbox) -> None:
        """Subscribers only listen: session.close ends the subscription, anything else is refused."""
        from websockets.exceptions import ConnectionClosed

        try:
            await self._read_messages(websocket, outbox)
        except ConnectionClosed:
            pass

    async def _read_messages(self, websocket: Any, outbox: Outbox) -> None:
        async for message in websocket:
            try:
                if isinstance(message, (bytes, bytearray)):
                    raise P.ProtocolError("invalid_message", "/v1/estimates is read-only: send media to /v1/stream")
                request = P.decode_text(message, self.service.limits)
                if request["type"] == "session.close":
                    outbox.put_control(P.session_closed("client", {"results": self.index}))
                    outbox.close()
                    return
                raise P.ProtocolError("config_invalid", "/v1/estimates follows the server's own capture; its "
                                                        "options are set when edge-serve starts")
            except P.ProtocolError as exc:
                outbox.put_control(P.error(exc.code, str(exc)))
