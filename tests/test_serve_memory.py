"""edge.serve.memory on glibc: with the mmap threshold fixed, freed large buffers go back to the system even when
small live allocations sit between them (the speech recognizer's pattern); with glibc's default they stay."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from edge.serve.memory import _glibc

pytestmark = pytest.mark.skipif(_glibc() is None or not sys.platform.startswith("linux"),
                                reason="glibc's allocator on Linux only (elsewhere edge.serve.memory does nothing)")

PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    from edge.serve.memory import fix_mmap_threshold

    def rss_mib():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

    if sys.argv[1] == "fixed":
        assert fix_mmap_threshold()
    warm = np.ones(2**21, np.float32)  # 8 MiB, freed: glibc raises its mmap threshold to 8 MiB
    del warm
    keep, big = [], []
    for i in range(64):
        big.append(np.ones(2**18 + 1000 * i, np.float32))  # about 1 MiB, a different size each time
        keep.append(bytes(2048 + i))  # a small live allocation after each: the heap cannot shrink past it
    before = rss_mib()
    del big
    print(before - rss_mib())
""")


def _returned_mib(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.strip())


def test_freed_large_buffers_go_back_with_the_threshold_fixed():
    fixed, default = _returned_mib("fixed"), _returned_mib("default")
    assert fixed > 48, f"64 freed buffers of about 1 MiB: {fixed:.1f} MiB returned"
    assert default < fixed / 4, f"glibc's default kept them in the heap: {default:.1f} MiB returned"
