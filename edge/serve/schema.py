"""The JSON Schemas of the protocol's messages (``edge/serve/schemas/<type>.json``, shipped in the package), and a
validator over them for tests and clients that want one (needs ``jsonschema``: ``pip install 'lfmim-edge[test]'``)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from edge._lazy import lazy_import
from edge.errors import InputError
from edge.serve.protocol import CLIENT_MESSAGES, SERVER_MESSAGES

#: Files beside the message schemas that they refer to.
SHARED = ("_options",)


def schema_names() -> tuple[str, ...]:
    return (*SERVER_MESSAGES, *CLIENT_MESSAGES, *SHARED)


def schema_text(name: str) -> str:
    """The schema file of message type ``name`` (e.g. ``measurement.result``), as text."""
    if name not in schema_names():
        raise InputError(f"no schema named {name!r}; the schemas are {', '.join(schema_names())}")
    return resources.files("edge.serve").joinpath("schemas", f"{name}.json").read_text(encoding="utf-8")


@lru_cache(maxsize=None)
def schema(name: str) -> dict[str, Any]:
    return json.loads(schema_text(name))


@lru_cache(maxsize=None)
def _validators() -> dict[str, Any]:
    jsonschema = lazy_import("jsonschema", purpose="validating protocol messages against their schemas")
    referencing = lazy_import("referencing", purpose="validating protocol messages against their schemas")
    registry = referencing.Registry().with_resources(
        (schema(n)["$id"], referencing.Resource.from_contents(schema(n))) for n in schema_names())
    return {n: jsonschema.Draft202012Validator(schema(n), registry=registry) for n in (*SERVER_MESSAGES,
                                                                                     *CLIENT_MESSAGES)}


def validate(message: Mapping[str, Any]) -> None:
    """Raise :class:`InputError` naming the first violation when ``message`` does not match its type's schema."""
    kind = message.get("type") if isinstance(message, Mapping) else None
    validator = _validators().get(kind) if isinstance(kind, str) else None
    if validator is None:
        raise InputError(f"message without a known type: {message!r}")
    errors = sorted(validator.iter_errors(dict(message)), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(map(str, first.absolute_path)) or "(top level)"
        raise InputError(f"{kind} message does not match its schema at {where}: {first.message}")
