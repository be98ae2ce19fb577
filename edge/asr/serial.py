"""A shared recognizer whose calls all run on one long-lived thread (for services whose streams come and go).

Every session of ``edge-serve`` runs its ASR stage on a thread of its own, so a shared model would see a new
calling thread per session.  Native runtimes keep per-thread state (CTranslate2's and the BLAS libraries' work
buffers, the allocator's arenas) that the calling thread's exit does not give back: measured with edge-serve's soak,
resident memory grew with the number of sessions served while the Python objects stayed constant, and stayed flat
with the ASR off.  :class:`OneThreadASR` runs every call on one worker thread, in arrival order (the backends serve
one call at a time anyway), so that state exists once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edge.asr.base import SpeechRecognizer, Transcript


class OneThreadASR(SpeechRecognizer):
    """``inner``'s transcribe / partial, run on one worker thread; the caller waits for the result."""

    def __init__(self, inner: SpeechRecognizer) -> None:
        self.inner = inner
        self.name = inner.name
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"edge-asr-{inner.name or 'model'}")

    def transcribe(self, samples16k: Any) -> Transcript:
        return self._pool.submit(self.inner.transcribe, samples16k).result()

    def partial(self, samples16k: Any) -> Transcript:
        return self._pool.submit(self.inner.partial, samples16k).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # language, model and the like: the inner recognizer's
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"OneThreadASR({self.inner!r})"
