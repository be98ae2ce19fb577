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
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (set LFMIM_DATA to the shared/data folder)")
    return DATA


TINY_PROFILE = ROOT / "tests" / "fixtures" / "tiny.toml"


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory) -> Path:
    """A real FP32 build of the tiny profile (the paper's architectures at small widths, random weights), made
    once per test session and shared: export, parity checks and manifest included (~20 s)."""
    from edge.build.builder import BuildOptions, build

    out = tmp_path_factory.mktemp("tiny-engines")
    return build(BuildOptions(profile=str(TINY_PROFILE), precision="fp32", target="cpu", out_root=str(out),
                              random_weights=True, progress=False)).parent


@pytest.fixture(scope="session")
def starter_build(tmp_path_factory) -> Path:
    """The starter CPU INT8 build as a user's machine makes it: no calibration data (the demo clip checks the
    quantized networks), the static INT8 networks taken from the package (made once per test session, shared)."""
    from edge.build.builder import BuildOptions, build

    if not (ROOT / "edge" / "assets" / "starter" / "lfmim.safetensors").is_file():
        pytest.fail("the starter assets are missing; run scripts/package_starter.py")
    out = tmp_path_factory.mktemp("starter-engines")
    return build(BuildOptions(profile="starter", precision="int8", target="cpu", out_root=str(out),
                              calibration_data="demo", progress=False, threads=1)).parent
