"""Read the variables of a CTranslate2 model file (``model.bin``) into numpy arrays: no ctranslate2 needed.

CTranslate2 writes a model as one binary file (format version 6 here): a header (version, spec name, spec revision,
variable count), then for each variable its name, rank, shape, a data-type code and its raw little-endian bytes,
then aliases.  :func:`read_ct2_variables` reads the variables whose names start with ``prefix`` (e.g. Whisper's
``encoder/``), so the starter profile's audio encoder can be rebuilt from the Whisper base model that the speech
recognizer installs (:mod:`edge.starter.whisper_audio`).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from edge.errors import CheckpointError

#: CTranslate2's data-type codes (ctranslate2::DataType) that can be read; int8 models also carry ``*_scale``.
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
#: Binary format versions this reader understands.
VERSIONS = (5, 6)


def read_ct2_variables(path: str | Path, prefix: str = "") -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {variable name: array}) of the variables of ``path`` whose names start with ``prefix``.

    Arrays are read-only views of the file's bytes in their stored type (float16 weights stay float16)."""
    path = Path(path)
    try:
        data = memoryview(path.read_bytes())
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the CTranslate2 model ({exc}); point at a faster-whisper model "
                              "folder's model.bin") from exc
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        if pos + struct.calcsize(fmt) > len(data):
            raise CheckpointError(f"{path}: truncated CTranslate2 model at byte {pos}; join or download it again")
        (value,) = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal pos
        n = take("H")
        out = bytes(data[pos:pos + n - 1]).decode("utf-8")
        pos += n
        return out

    version = take("I")
    if version not in VERSIONS:
        raise CheckpointError(f"{path}: CTranslate2 binary version {version}, this reader knows {VERSIONS}; is it a "
                              "CTranslate2 model.bin?")
    spec = text()
    take("I")  # spec revision
    out: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = text()
        shape = tuple(take("I") for _ in range(take("B")))
        code = take("B")
        size = take("I")
        if pos + size > len(data):
            raise CheckpointError(f"{path}: variable {name!r} runs past the end of the file (truncated model); join "
                                  "or download it again")
        if name.startswith(prefix):
            if code not in DTYPES:
                raise CheckpointError(f"{path}: variable {name!r} has CTranslate2 type code {code}, not one of "
                                      f"{sorted(DTYPES)}; convert the model with --quantization float16 or float32")
            dtype = np.dtype(DTYPES[code]).newbyteorder("<")
            count = int(np.prod(shape)) if shape else 1
            if count * dtype.itemsize != size:
                raise CheckpointError(f"{path}: variable {name!r} holds {size} bytes, not {count} x {dtype.itemsize}")
            out[name] = np.frombuffer(data, dtype, count=count, offset=pos).reshape(shape)
        pos += size
    return spec, out
