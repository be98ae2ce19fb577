"""The first run of a profile: make its build once, then every later run opens it (run side).

- A profile that ships every network as ONNX (``shipped``, the starter) on the CPU: prepared here without torch
  (:func:`edge.prepare.shipped.prepare_shipped`: copies, dynamic INT8, the fidelity gate on the demo clip, the
  fastest passing variant per network).  Needs only ``pip install 'lfmim-edge[cpu]'``.
- Any other profile or target: one call into the build side, ``edge-build --fallback`` in a child process, taken
  only when the build extras (torch, transformers) are installed; otherwise one line says what to install.

Either way the first run never dies on the fidelity gate: a network whose INT8 form fails it on this machine runs
in FP32, with one warning line, and the manifest records it.  Both write into a temporary folder renamed into place
at the end, so Ctrl-C during the build leaves no half-written build.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

from edge.errors import InputError, MissingDependency
from edge.profile import load_profile
from edge.runtime.engines import engine_dir

log = logging.getLogger("edge")

BUILD_EXTRAS = ("torch", "transformers", "onnx")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def build_command(profile: str, target: str, root: str, *, random_weights: bool) -> list[str]:
    return [sys.executable, "-m", "edge.cli.build", "--profile", profile, "--precision", "int8", "--target", target,
            "--out-root", root, "--fallback", *(["--random-weights"] if random_weights else [])]


def ensure_build(profile: str, *, target: str = "cpu", root: str = "engines", random_weights: bool = False,
                 threads: int | None = None) -> Path:
    """The build folder of ``profile`` for ``target`` under ``root``, made now if there is none yet."""
    prof = load_profile(profile)
    folder = engine_dir(prof.name, target, root)
    if (folder / "manifest.json").is_file():
        return folder
    if prof.shipped and target == "cpu" and not random_weights:
        from edge.prepare.shipped import prepare_shipped

        log.warning("no cpu build of profile %r yet: preparing it from its shipped networks (once, kept in %s)",
                    prof.name, folder)
        prepare_shipped(prof, root=root, fallback=True, threads=threads)
        return folder
    missing = [m for m in BUILD_EXTRAS if not _installed(m)]
    command = build_command(profile, target, root, random_weights=random_weights)
    shown = " ".join(["edge-build", *command[3:]])
    if missing:
        raise MissingDependency(
            f"no {target} build of profile {prof.name!r} in {folder}, and making one needs the build extras "
            f"({', '.join(missing)} missing): pip install 'lfmim-edge[build,train]', then run `{shown}` (or run "
            "the starter profile, which needs none)")
    log.warning("no %s build of profile %r yet: building it now with `%s` (once, kept in %s)", target, prof.name,
                shown, folder)
    done = subprocess.run(command, check=False)
    if done.returncode != 0 or not (folder / "manifest.json").is_file():
        raise InputError(f"building profile {prof.name!r} failed (`{shown}` exited with {done.returncode}); its "
                         "messages are above")
    return folder
