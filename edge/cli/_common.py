"""What every command shares: logging, one-line errors, and flags generated from config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import Any, Callable, Iterable, Mapping

from edge.errors import EdgeError


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    # Our own messages at ``level``; other libraries' (ONNX Runtime's quantizer is chatty) at warnings only.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("edge").setLevel(level)


def run_main(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command body; user errors become one line on stderr and exit status 2."""
    try:
        return int(body() or 0)
    except EdgeError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; everything written so far is kept", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_flags(parser: argparse.ArgumentParser | Any, cls: type, help_text: Mapping[str, str],
                        *, skip: Iterable[str] = ()) -> list[str]:
    """Add one ``--field-name`` flag per field of ``cls`` (default None = the dataclass default).

    Returns the field names added, so a test can check that flags and fields agree.
    """
    skip = set(skip)
    added = []
    defaults = cls()
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        default = getattr(defaults, field.name)
        kwargs: dict[str, Any] = {"default": None, "dest": field.name,
                                  "help": f"{help_text.get(field.name, '')} (default: {default})".strip()}
        if isinstance(default, tuple):
            kwargs.update(nargs=len(default), type=type(default[0]), metavar=field.name.upper())
        elif isinstance(default, bool):
            kwargs.update(action=argparse.BooleanOptionalAction)
        else:
            kwargs["type"] = type(default)
        parser.add_argument(flag(field.name), **kwargs)
        added.append(field.name)
    return added


def dataclass_overrides(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out
