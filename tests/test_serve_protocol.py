"""The protocol without a server: framing, limits, option validation (and its agreement with the JSON Schemas),
result messages from real estimates, tokens and origins, the send queue, the CLI's options and refusals."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from edge.errors import InputError
from edge.serve import auth
from edge.serve import protocol as P
from edge.serve.outbox import Outbox
from edge.stream.estimate import Smoother, make_estimate

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (pip install 'lfmim-edge[test]')")
from edge.serve.schema import schema, schema_names, validate  # noqa: E402

CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
OPTIONS = P.SessionOptions(rate=2.0, window=4.0, language="en", fps=8.0)


def test_media_framing_round_trips_and_refuses_malformed_messages():
    msg = P.encode_media(P.VIDEO, 12.5, b"\xff\xd8\xffpayload")
    assert len(msg) == 9 + 10 and msg[:1] == b"V"
    assert P.decode_media(msg) == (b"V", 12.5, b"\xff\xd8\xffpayload")
    cases = [(b"A\x00\x00", "invalid_message", "shorter than its 9-byte header"),
             (P.encode_media(P.AUDIO, 0.0, b"")[:0] + b"X" + bytes(8), "invalid_message", "unknown media kind"),
             (b"A" + np.float64(np.nan).tobytes(), "invalid_audio_frame", "not a finite"),
             (P.encode_media(P.VIDEO, 0, bytes(2 * 1024 * 1024 + 1)), "message_too_large", "over the limit"),
             (P.encode_media(P.AUDIO, 0, bytes(2 * 16_001)), "message_too_large", "more than 1 s")]
    for data, code, match in cases:
        with pytest.raises(P.ProtocolError, match=match) as info:
            P.decode_media(data)
        assert info.value.code == code


def test_text_messages_are_checked():
    assert P.decode_text('{"type": "session.close"}') == {"type": "session.close"}
    for text, code in (("{nope", "invalid_message"), ("[1, 2]", "invalid_message"),
                       ('{"type": "session.created"}', "invalid_message"),
                       ('{"type": "session.update", "x": "' + "a" * 70_000 + '"}', "message_too_large")):
        with pytest.raises(P.ProtocolError) as info:
            P.decode_text(text)
        assert info.value.code == code


UPDATES = [
    ({"rate": 4, "window": 2.5}, True), ({"modalities": ["vision"]}, True), ({"modalities": ["audio", "text"]}, True),
    ({"language": "en", "fps": 16}, True), ({}, True),
    ({"rate": 0}, False), ({"rate": 11}, False), ({"rate": "2"}, False), ({"rate": True}, False),
    ({"window": 0.1}, False), ({"fps": 17}, False), ({"modalities": []}, False), ({"modalities": ["smell"]}, False),
    ({"modalities": ["audio", "audio"]}, False), ({"language": 3}, False), ({"colour": "red"}, False),
]


@pytest.mark.parametrize("config, valid", UPDATES)
def test_option_validation_agrees_with_the_schema(config, valid):
    message = {"type": "session.update", "config": config}
    schema_ok = True
    try:
        validate(message)
    except InputError:
        schema_ok = False
    assert schema_ok == valid
    if valid:
        updated = P.apply_update(OPTIONS, config, languages=("en",), limits=P.Limits())
        validate(P.session_updated(updated))
    else:
        with pytest.raises(P.ProtocolError) as info:
            P.apply_update(OPTIONS, config, languages=("en",), limits=P.Limits())
        assert info.value.code == "config_invalid"


def test_rules_beyond_the_schema_have_clear_messages():
    with pytest.raises(P.ProtocolError, match="text comes from speech recognition"):
        P.apply_update(OPTIONS, {"modalities": ["text", "vision"]}, languages=("en",), limits=P.Limits())
    with pytest.raises(P.ProtocolError, match="'zh' is not one this server recognises: en"):
        P.apply_update(OPTIONS, {"language": "zh"}, languages=("en",), limits=P.Limits())


def _estimate(available: dict[str, bool]) -> object:
    rng = np.random.default_rng(0)
    raw = {o: (rng.dirichlet(np.ones(7)) if available.get(o, any(available.values())) else None)
           for o in ("text", "audio", "vision", "fused")}
    return make_estimate(3, time=2.0, media_time=1.5, classes=CLASSES, raw=raw, smoother=Smoother("none"),
                         available=available, age_s={"text": 0.2, "audio": None, "vision": 0.0}, transcript="hi",
                         latency_ms={"tick": 3.2, "end_to_end": 41.0, "lfmim": 1.0},
                         faces={"frames": 8, "with_face": 7}, dropped={"frames": 0.0, "audio_s": 0.0})


@pytest.mark.parametrize("available", [{"text": True, "audio": True, "vision": True},
                                       {"text": False, "audio": False, "vision": True},
                                       {"text": False, "audio": False, "vision": False}])
def test_result_messages_from_real_estimates_match_the_schema(available):
    msg = P.measurement_result(_estimate(available), P.ResultContext(0, 1234.5, {"results": 2.0}))
    validate(msg)
    for m in ("text", "audio", "vision"):
        assert (msg[m] is None) == (not available[m])
    assert (msg["fused"] is None) == (not any(available.values()))
    if msg["fused"] is not None:
        probs = [p["probability"] for p in msg["fused"]["probabilities"]]
        assert abs(sum(probs) - 1) < 1e-3 and msg["fused"]["label"] == CLASSES[int(np.argmax(probs))]
    with pytest.raises(InputError, match="index"):
        validate({**msg, "index": -1})


def test_every_server_message_has_a_schema_and_builders_match_them():
    assert set(schema_names()) >= set(P.SERVER_MESSAGES) | set(P.CLIENT_MESSAGES)
    for name in schema_names():
        jsonschema.Draft202012Validator.check_schema(schema(name))
    validate(P.session_created("0123456789abcdef", OPTIONS, P.Limits(), endpoint=P.STREAM_PATH, record=False,
                               server={"version": "0.1.0", "profile": "starter", "classes": list(CLASSES),
                                       "languages": ["en"], "idle_timeout_s": 60.0, "random_weights": False}))
    validate(P.error("rate_limited", "too fast", dropped=3))
    validate(P.session_closed("idle_timeout", {"results": 3, "frames": 2}))
    with pytest.raises(ValueError):
        P.error("teapot", "no such code")


def test_tokens_origins_and_binding():
    assert auth.presented_token("/v1/stream", "Bearer abc") == "abc"
    assert auth.presented_token("/v1/stream?token=xyz&a=1", None) == "xyz"
    assert auth.presented_token("/v1/stream?token=xyz", "Basic Zm9v") == "xyz"
    assert auth.presented_token("/v1/stream", None) is None
    assert auth.token_ok(None, None) and auth.token_ok("s" * 16, "s" * 16)
    assert not auth.token_ok("s" * 16, None) and not auth.token_ok("s" * 16, "t" * 16)
    assert auth.origin_ok(None, "127.0.0.1:8765")
    assert auth.origin_ok("http://127.0.0.1:8765", "127.0.0.1:8765")
    assert not auth.origin_ok("https://evil.example", "127.0.0.1:8765")
    assert auth.origin_ok("https://kiosk.example", "127.0.0.1:8765", ("https://kiosk.example",))
    for host in ("127.0.0.1", "127.3.2.1", "::1", "localhost"):
        auth.check_binding(host, None)
    with pytest.raises(InputError, match="give --token SECRET"):
        auth.check_binding("0.0.0.0", None)
    auth.check_binding("0.0.0.0", "s" * 16)
    assert auth.resolve_token(None, {auth.TOKEN_ENV: "e" * 20}) == "e" * 20
    with pytest.raises(InputError, match="at least 16"):
        auth.resolve_token("short", {})


def test_the_outbox_drops_the_oldest_results_and_keeps_control_messages_ahead():
    class Socket:
        def __init__(self):
            self.sent = []

        async def send(self, text):
            self.sent.append(text)

    async def body():
        box, ws = Outbox(capacity=3), Socket()
        for i in range(5):
            box.put_result({"type": "measurement.result", "index": i})
        box.put_control({"type": "error", "code": "rate_limited", "message": "x"})
        box.close()
        await box.pump(ws)
        return box, ws.sent

    box, sent = asyncio.run(body())
    assert box.results_dropped == 2 and box.sent == 4
    assert '"error"' in sent[0] and ['"index":2' in s for s in sent[1:]] == [True, False, False]
    assert '"index":4' in sent[-1]


def test_cli_flags_and_config_fields_agree():
    from edge.cli import serve as cli
    from edge.serve.config import ServeConfig

    serve_fields, run_fields = cli.config_fields()
    parser = cli.build_parser()
    dests = {a.dest for a in parser._actions}
    assert set(serve_fields) <= dests and set(run_fields) <= dests
    assert not set(cli.RUN_SKIP) & {"host", "port"}
    assert [f.name for f in dataclasses.fields(ServeConfig)] == serve_fields


def test_edge_serve_refuses_to_listen_beyond_loopback_without_a_token():
    env = {k: v for k, v in __import__("os").environ.items() if k != auth.TOKEN_ENV}
    proc = subprocess.run([sys.executable, "-m", "edge.cli.serve", "--host", "0.0.0.0"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "give --token SECRET" in lines[0], proc.stderr


def test_the_service_side_imports_no_torch():
    code = ("import sys; import edge.serve.app, edge.serve.session, edge.serve.estimates, edge.client, "
            "edge.cli.serve, edge.stream.push; "
            "bad = [m for m in ('torch', 'transformers', 'edge.build', 'edge.model') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
