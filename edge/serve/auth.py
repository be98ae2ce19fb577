"""Who may connect: loopback binding without a token, any other address only with one (``--token`` or
``LFMIM_EDGE_TOKEN``); clients pass ``Authorization: Bearer <token>`` or ``?token=<token>``; a wrong or missing
token is refused at the handshake with HTTP 401.  Browser pages from other origins are refused (HTTP 403) unless
allowed with ``--allow-origin``, so a web page elsewhere cannot drive a kiosk's local service."""

from __future__ import annotations

import hmac
import ipaddress
import os
from typing import Iterable
from urllib.parse import parse_qs, urlsplit

from edge.errors import InputError

TOKEN_ENV = "LFMIM_EDGE_TOKEN"
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """True for addresses that only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(flag: str | None, environ: dict[str, str] | None = None) -> str | None:
    """The token from ``--token`` or else ``$LFMIM_EDGE_TOKEN``; None when neither is set."""
    env = os.environ if environ is None else environ
    token = flag if flag else env.get(TOKEN_ENV) or None
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise InputError(f"the token is {len(token)} characters long; use at least {MIN_TOKEN_CHARS} random "
                         f"characters, e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`")
    return token


def check_binding(host: str, token: str | None) -> None:
    """Refuse, in one line, to listen on a non-loopback address without a token."""
    if token is None and not is_loopback(host):
        raise InputError(f"--host {host} would let other machines connect; give --token SECRET (or set "
                         f"{TOKEN_ENV}) so that clients must authenticate, or listen on 127.0.0.1")


def presented_token(path: str, authorization: str | None) -> str | None:
    """The token a request carries: ``Authorization: Bearer ...`` first, else the ``token`` query parameter."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values else None


def token_ok(expected: str | None, presented: str | None) -> bool:
    """Constant-time comparison; everything passes when the server has no token."""
    if expected is None:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), presented.encode("utf-8"))


def origin_ok(origin: str | None, host_header: str | None, allowed: Iterable[str] = ()) -> bool:
    """Non-browser clients send no Origin; a page must come from this server itself or an allowed origin."""
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if origin in {a.rstrip("/") for a in allowed} or "*" in allowed:
        return True
    parts = urlsplit(origin)
    return bool(host_header) and parts.scheme in ("http", "https") and parts.netloc.lower() == host_header.lower()
