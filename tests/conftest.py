"""Shared fixtures: the real data folder (skipped where absent) and the GPU marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LFMIM_DATA", ROOT.parent / "shared" / "data"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA; none on this machine")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_clip() -> Path:
    """The demo clip (made with espeak-ng and ffmpeg; cached): real decoded media that every machine can make."""
    from edge.media import tool_path

    if not (tool_path("ffmpeg") and tool_path("espeak-ng")):
        pytest.skip("the demo clip needs ffmpeg and espeak-ng (apt-get install ffmpeg espeak-ng)")
    pytest.importorskip("cv2", reason="the demo clip needs OpenCV (pip install 'lfmim-edge[cpu]')")
    from edge.demo import make_demo_clip

    return make_demo_clip()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (set LFMIM_DATA to the shared/data folder)")
    return DATA


TINY_PROFILE = ROOT / "tests" / "fixtures" / "tiny.toml"


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory) -> Path:
    """A real FP32 build of the tiny profile (the paper's architectures at small widths, random weights), made
    once per test session and shared: export, parity checks and manifest included (~20 s).  Exporting needs the
    build extras (torch): where they are not installed (the run-path-only lane) the tests that use it skip."""
    pytest.importorskip("torch", reason="the tiny build is exported with PyTorch (pip install 'lfmim-edge[train,build]')")
    from edge.build.builder import BuildOptions, build

    out = tmp_path_factory.mktemp("tiny-engines")
    return build(BuildOptions(profile=str(TINY_PROFILE), precision="fp32", target="cpu", out_root=str(out),
                              random_weights=True, progress=False)).parent


@pytest.fixture(scope="session")
def starter_build(tmp_path_factory) -> Path:
    """The starter CPU build as a user's first run makes it, without torch and without calibration data: the shipped
    FP32 networks, MiniLM written to ONNX from its package, the static INT8 networks from the package, everything
    gated on the demo clip and kept per network as this machine's timings say (made once per session, shared)."""
    if not (ROOT / "edge" / "assets" / "starter" / "lfmim.fp32.onnx").is_file():
        pytest.fail("the starter assets are missing; run scripts/package_starter.py")
    pytest.importorskip("onnxruntime", reason="pip install 'lfmim-edge[cpu]'")
    from edge.prepare.shipped import prepare_shipped

    out = tmp_path_factory.mktemp("starter-engines")
    return prepare_shipped("starter", root=out, progress=False, threads=1).parent
