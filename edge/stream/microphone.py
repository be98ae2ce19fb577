"""Microphone capture through sounddevice (PortAudio), resampled to 16 kHz mono as it streams.

:class:`MicrophoneSource` opens an input stream at the device's native rate; PortAudio's callback stamps each
block from the run's clock and hands it to the source's thread, which resamples it with
:class:`StreamingResampler` (the polyphase filter of :func:`edge.features.audio_pre.resample`, with its history
carried across blocks) and puts ``Sample(t, float32 chunk of `block` samples)`` into an
:class:`~edge.stream.queues.AudioQueue`.  Overflows (PortAudio's ``input_overflow`` flag, or a slow consumer) are
counted, never silent.  A stream that dies (device unplugged) is reopened with backoff, like a camera.
:func:`list_devices` is ``--list-devices``.  sounddevice is imported lazily with its install hint.
"""

from __future__ import annotations

import logging
from math import gcd
from typing import Any, Sequence

import numpy as np

from edge.errors import EdgeError, InputError, MissingDependency
from edge.features.audio_pre import _lowpass, to_float32
from edge.stream.clock import Clock
from edge.stream.queues import AudioQueue, Empty, Sample
from edge.stream.sources import MAX_FAILURES, RETRY, ErrorCallback, Source

log = logging.getLogger("edge")

#: Seconds of native-rate audio held between PortAudio's callback and the resampling thread.
RAW_BUFFER_SECONDS = 5.0
_NO_MIC = "use --audio FILE to replay a recording"
_PORTAUDIO_HINT = "apt-get install libportaudio2 (Debian/Ubuntu) or brew install portaudio (macOS)"


class StreamingResampler:
    """Rational polyphase resampling, block by block, with the filter's history carried across blocks.

    The concatenation of every :meth:`push` output and the final :meth:`flush` equals
    ``edge.features.audio_pre.resample`` of the whole signal (to float rounding): the output lags the input by
    the filter's half length (1 ms at 48 kHz -> 16 kHz) until flushed.
    """

    def __init__(self, sr_in: int, sr_out: int = 16_000) -> None:
        if int(sr_in) != sr_in or int(sr_out) != sr_out or sr_in <= 0 or sr_out <= 0:
            raise InputError(f"sample rates must be positive integers in Hz, got {sr_in} and {sr_out}")
        g = gcd(int(sr_in), int(sr_out))
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self.up, self.down = self.sr_out // g, self.sr_in // g
        self.samples_in = self.samples_out = 0
        self._buf = np.zeros(0, dtype=np.float64)
        self._buf_start = 0  # absolute input index of _buf[0]
        if self.up == self.down:
            return
        h = _lowpass(self.up, self.down)
        self._half = (h.size - 1) // 2
        self._taps = -(-h.size // self.up)
        phases = np.zeros(self._taps * self.up)
        phases[: h.size] = h
        self._phases = phases.reshape(self._taps, self.up).T

    def push(self, x: np.ndarray) -> np.ndarray:
        """Resample the next block (mono samples, any PCM dtype) -> float32 output that is ready so far."""
        x = to_float32(x).reshape(-1)
        self.samples_in += x.size
        if self.up == self.down:
            self.samples_out += x.size
            return x.copy()
        self._buf = np.concatenate([self._buf, x.astype(np.float64)])
        ready = (self.samples_in * self.up - 1 - self._half) // self.down + 1
        return self._emit(ready)

    def flush(self) -> np.ndarray:
        """The rest of the output (the input is taken to end here, followed by silence)."""
        if self.up == self.down:
            return np.zeros(0, dtype=np.float32)
        return self._emit(-(-self.samples_in * self.up // self.down))

    def _emit(self, end: int) -> np.ndarray:
        if end <= self.samples_out:
            return np.zeros(0, dtype=np.float32)
        n = np.arange(self.samples_out, end, dtype=np.int64)
        m_hi, p = np.divmod(n * self.down + self._half, self.up)
        idx = m_hi[:, None] - np.arange(self._taps)[None, :]  # absolute input indices; outside the input: 0
        lo, hi = int(idx.min()), int(idx.max())
        window = np.zeros(hi - lo + 1)
        a, b = max(lo, self._buf_start), min(hi, self.samples_in - 1)
        if b >= a:
            window[a - lo: b - lo + 1] = self._buf[a - self._buf_start: b - self._buf_start + 1]
        out = np.einsum("ij,ij->i", window[idx - lo], self._phases[p]).astype(np.float32)
        self.samples_out = end
        keep_from = (end * self.down + self._half) // self.up - self._taps + 1  # oldest input the next output reads
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start:]
            self._buf_start = keep_from
        return out

    def input_position(self, out_index: int) -> float:
        """Input sample position (fractional) that output sample ``out_index`` is aligned with."""
        return out_index * self.sr_in / self.sr_out


def _sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as exc:  # the package is there but the PortAudio library is not
        raise InputError(f"no microphone: the PortAudio library is not installed ({_PORTAUDIO_HINT}); "
                         f"{_NO_MIC}") from exc
    except ImportError as exc:
        raise MissingDependency("the package 'sounddevice' is not installed (needed for microphone capture); "
                                f"install it with: pip install sounddevice (and PortAudio: {_PORTAUDIO_HINT})"
                                ) from exc
    return sounddevice


def _input_devices(sd: Any) -> list[tuple[int, dict]]:
    try:
        devices = sd.query_devices()
    except Exception as exc:  # noqa: BLE001 - PortAudioError and its kin
        raise InputError(f"no microphone: PortAudio cannot list audio devices ({exc}); {_NO_MIC}") from exc
    return [(i, dict(d)) for i, d in enumerate(devices) if d.get("max_input_channels", 0) > 0]


def _describe(inputs: Sequence[tuple[int, dict]]) -> str:
    return "; ".join(f"{i}: {d.get('name', '?')}" for i, d in inputs)


def resolve_device(sd: Any, device: int | str | None) -> tuple[int, dict]:
    """(index, info) of the input device ``device`` names (None: the default input); InputError naming those there."""
    inputs = _input_devices(sd)
    if not inputs:
        raise InputError(f"no microphone found (PortAudio lists no audio input device); {_NO_MIC}")
    by_index = dict(inputs)
    if device is None:
        default = sd.default.device
        idx = default[0] if isinstance(default, (list, tuple)) or hasattr(default, "__getitem__") else default
        idx = int(idx) if idx is not None and int(idx) in by_index else inputs[0][0]
        return idx, by_index[idx]
    text = str(device).strip()
    if text.isdigit():
        if int(text) in by_index:
            return int(text), by_index[int(text)]
        raise InputError(f"no audio input device with index {text}; input devices: {_describe(inputs)}")
    exact = [(i, d) for i, d in inputs if d.get("name", "").lower() == text.lower()]
    matches = exact or [(i, d) for i, d in inputs if text.lower() in d.get("name", "").lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise InputError(f"no audio input device named {text!r}; input devices: {_describe(inputs)}")
    raise InputError(f"{text!r} matches several input devices ({_describe(matches)}); give its index with --mic N")


def list_devices(backend: Any = None) -> str:
    """What ``--list-devices`` prints: one line per audio input device (index, name, channels, native rate)."""
    sd = backend or _sounddevice()
    inputs = _input_devices(sd)
    if not inputs:
        return f"no audio input devices found; {_NO_MIC}"
    try:
        default, _ = resolve_device(sd, None)
    except InputError:
        default = -1
    lines = ["audio input devices (use --mic INDEX or --mic NAME):"]
    for i, d in inputs:
        mark = "  (default)" if i == default else ""
        lines.append(f"  {i:>3}  {d.get('name', '?')}  ({d.get('max_input_channels')} in, "
                     f"{d.get('default_samplerate', 0):.0f} Hz){mark}")
    return "\n".join(lines)


class MicrophoneSource(Source):
    """Microphone audio as ``Sample(t, float32 mono chunk of `block` samples at `sample_rate`)`` into ``queue``.

    ``t`` is the clock's time of the chunk's first sample (the callback's stamp minus the block length, carried
    through the resampler).  ``input_overflows`` counts PortAudio's overflow flags, ``raw_overflow_seconds`` audio
    lost between the callback and this source's thread; the output queue counts its own overflows.  A stream that
    stops (device gone) is reopened after each wait of ``retry``; after ``max_failures`` in a row an
    :class:`InputError` is reported and the queue gets ``EndOfStream("error")``.  ``backend`` replaces the
    sounddevice module for fault injection in tests only (``query_devices``, ``default.device``, ``InputStream``).
    """

    def __init__(self, device: int | str | None = None, *, clock: Clock, queue: AudioQueue,
                 sample_rate: int = 16_000, block: int = 512, retry: Sequence[float] = RETRY,
                 max_failures: int = MAX_FAILURES, on_error: ErrorCallback | None = None, backend: Any = None,
                 name: str = "microphone") -> None:
        super().__init__(name, clock=clock, on_error=on_error)
        if isinstance(block, bool) or not isinstance(block, int) or block <= 0:
            raise InputError(f"block must be a positive number of samples, got {block!r}")
        self.device, self.queue, self.sample_rate, self.block = device, queue, int(sample_rate), block
        self.retry, self.max_failures = tuple(retry), max_failures
        self.input_overflows = 0
        self._backend = backend
        self._sd: Any = None
        self._stream: Any = None
        self._raw: AudioQueue | None = None
        self._resampler: StreamingResampler | None = None
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_t = 0.0
        self.device_name = ""
        self.native_rate = 0

    @property
    def raw_overflow_seconds(self) -> float:
        return 0.0 if self._raw is None else self._raw.overflow_seconds

    def _queues(self) -> Sequence[Any]:
        return (self.queue,)

    def _open(self) -> None:
        self._sd = self._sd or self._backend or _sounddevice()
        index, info = resolve_device(self._sd, self.device)
        self.device_name = str(info.get("name", index))
        self.native_rate = int(round(float(info.get("default_samplerate") or self.sample_rate)))
        self._resampler = StreamingResampler(self.native_rate, self.sample_rate)
        self._pending = np.zeros(0, dtype=np.float32)
        if self._raw is None:
            self._raw = AudioQueue(RAW_BUFFER_SECONDS, sample_rate=self.native_rate)
        native_block = max(1, self.block * self.native_rate // self.sample_rate)
        try:
            self._stream = self._sd.InputStream(device=index, channels=1, samplerate=self.native_rate,
                                                blocksize=native_block, dtype="float32", callback=self._callback)
            self._stream.start()
        except Exception as exc:  # noqa: BLE001 - PortAudioError: busy, unplugged, unsupported format
            self._stream = None
            raise InputError(f"cannot open the microphone {self.device_name!r} ({exc}); see --list-devices, "
                             f"or {_NO_MIC}") from exc
        log.info("microphone %r: %d Hz native, resampled to %d Hz", self.device_name, self.native_rate,
                 self.sample_rate)

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's thread: stamp, copy, hand over; nothing slow here."""
        t = self.clock.now() - frames / self.native_rate
        if status and getattr(status, "input_overflow", False):
            self.input_overflows += 1
        self._raw.put(Sample(t, np.array(indata[:, 0], dtype=np.float32)))  # type: ignore[union-attr]

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            for step in ("stop", "close"):
                try:
                    getattr(stream, step)()
                except Exception:  # noqa: BLE001
                    log.debug("microphone %s failed", step, exc_info=True)

    def _run(self) -> str:
        while True:
            self._check_stop()
            try:
                raw = self._raw.get(timeout=0.2)  # type: ignore[union-attr]
            except Empty:
                if self._stream is None or not getattr(self._stream, "active", True):
                    self._reconnect("the input stream stopped")
                continue
            self.failures_in_row = 0
            self._resample(raw)

    def _resample(self, raw: Sample) -> None:
        rs = self._resampler
        first_out = rs.samples_out  # type: ignore[union-attr]
        y = rs.push(raw.data)  # type: ignore[union-attr]
        if y.size == 0:
            return
        block_start_in = rs.samples_in - raw.data.size  # type: ignore[union-attr]
        t = raw.t + (rs.input_position(first_out) - block_start_in) / self.native_rate  # type: ignore[union-attr]
        if self._pending.size == 0:
            self._pending_t = t
        self._pending = np.concatenate([self._pending, y])
        while self._pending.size >= self.block:
            chunk, self._pending = self._pending[: self.block], self._pending[self.block:]
            self._deliver(self.queue, Sample(self._pending_t, chunk), block=False)
            self.audio_samples += chunk.size
            self._pending_t += self.block / self.sample_rate

    def _reconnect(self, why: str) -> None:
        while True:
            self.failures += 1
            self.failures_in_row += 1
            if self.failures_in_row > self.max_failures:
                raise InputError(f"the microphone {self.device_name!r} stopped ({why}); gave up after "
                                 f"{self.max_failures} attempts to reopen it")
            wait = self.retry[min(self.failures_in_row - 1, len(self.retry) - 1)]
            log.warning("microphone %r: %s; reopening in %.1f s (attempt %d of %d)", self.device_name, why, wait,
                        self.failures_in_row, self.max_failures)
            self._state = "reconnecting"
            self._close()
            self._sleep(wait)
            try:
                self._open()
            except EdgeError as exc:
                why = str(exc)
                continue
            self.reconnects += 1
            self._state = "running"
            return
