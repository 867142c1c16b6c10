"""Reading CTranslate2's `model.bin`: the variables a converted model stores, as numpy arrays.

The `ctranslate2` package writes this file (`ctranslate2.specs.ModelSpec.save`) and its C++ runtime reads it, but
neither hands the stored variables back to Python, so converting a CTranslate2 model back needs this reader.
The layout, as `ModelSpec._serialize` writes it and `src/models/model.cc` reads it (little-endian):

    uint32 binary version; string spec name; uint32 spec revision
    uint32 number of variables, then per variable:
        string name; uint8 rank; uint32 x rank shape; uint8 dtype id; uint32 byte count; the bytes (C order)
    uint32 number of aliases, then per alias: string alias; string name of the variable it stands for

where a string is a uint16 length (counting a trailing NUL), the UTF-8 bytes and the NUL. Binary versions 4 to 6
share this layout (older ones stored an item size instead of the dtype id and predate every Whisper model).

numpy only: no torch, no ctranslate2.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

SUPPORTED_BINARY_VERSIONS = (4, 5, 6)

# Indexed by the dtype id, in the order of CTranslate2's `DataType` enum (include/ctranslate2/types.h).
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


class CT2FormatError(ValueError):
    """A file that is not a CTranslate2 model.bin this reader understands (truncated, other format, newer version)."""


@dataclass
class CT2ModelFile:
    """What a `model.bin` holds.

    Attributes:
        binary_version: the file format's version.
        spec_name: the model specification, e.g. ``"WhisperSpec"``.
        spec_revision: the revision of that specification.
        variables: name -> array with its stored shape and dtype; bfloat16 arrives as float32 (exact), scalars as
            0-d arrays. Aliases are resolved: an alias name maps to the same array as the variable it names, and,
            as in CTranslate2's loader, ``alias + "_scale"`` to that variable's quantisation scale if it has one.
        aliases: alias -> the name of the variable it stands for (e.g. a projection tied to the embeddings).
    """

    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


class _Cursor:
    """Reads little-endian values from a bytes buffer, failing with the offset when the buffer runs out."""

    def __init__(self, data: bytes, name: str):
        self.data, self.name, self.offset = data, name, 0

    def take(self, size: int) -> memoryview:
        if self.offset + size > len(self.data):
            raise CT2FormatError(f"{self.name}: truncated at byte {self.offset} (wanted {size} more bytes)")
        view = memoryview(self.data)[self.offset:self.offset + size]
        self.offset += size
        return view

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (length,) = self.unpack("H")
        raw = bytes(self.take(length))
        if not raw.endswith(b"\0"):
            raise CT2FormatError(f"{self.name}: string at byte {self.offset - length} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


def _array(raw: memoryview, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bfloat16":
        # bfloat16 is the upper half of a float32: widening it is exact.
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)


def read_ct2_model(path: str | os.PathLike) -> CT2ModelFile:
    """Read a CTranslate2 `model.bin` (or the folder holding it) into numpy arrays.

    Args:
        path: the file, or a CTranslate2 model folder containing ``model.bin``.

    Returns:
        `CT2ModelFile` with every variable and alias.

    Raises:
        CT2FormatError: the file is truncated, has trailing bytes, or has an unsupported binary version.
        FileNotFoundError: there is no such file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "model.bin")
    with open(path, "rb") as f:
        cursor = _Cursor(f.read(), path)
    (version,) = cursor.unpack("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise CT2FormatError(f"{path}: binary version {version}; this reader supports versions "
                             f"{', '.join(map(str, SUPPORTED_BINARY_VERSIONS))} (is it a CTranslate2 model.bin?)")
    model = CT2ModelFile(binary_version=version, spec_name=cursor.string(), spec_revision=cursor.unpack("I")[0])
    (count,) = cursor.unpack("I")
    for _ in range(count):
        name = cursor.string()
        (rank,) = cursor.unpack("B")
        shape = cursor.unpack(f"{rank}I")
        dtype_id, num_bytes = cursor.unpack("BI")
        if dtype_id >= len(DTYPES):
            raise CT2FormatError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        dtype = DTYPES[dtype_id]
        expected = int(np.prod(shape, dtype=np.int64)) * (2 if dtype == "bfloat16" else np.dtype(dtype).itemsize)
        if num_bytes != expected:
            raise CT2FormatError(f"{path}: variable {name!r} of shape {list(shape)} and dtype {dtype} has "
                                 f"{num_bytes} bytes, expected {expected}")
        model.variables[name] = _array(cursor.take(num_bytes), dtype, shape)
    (count,) = cursor.unpack("I")
    for _ in range(count):
        alias, target = cursor.string(), cursor.string()
        model.aliases[alias] = target
    if cursor.offset != len(cursor.data):
        raise CT2FormatError(f"{path}: {len(cursor.data) - cursor.offset} unexpected bytes after the aliases")
    for alias, target in model.aliases.items():
        if target not in model.variables:
            raise CT2FormatError(f"{path}: alias {alias!r} names a missing variable {target!r}")
        model.variables[alias] = model.variables[target]
        if target + "_scale" in model.variables:
            model.variables[alias + "_scale"] = model.variables[target + "_scale"]
    return model


def dequantized(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Variable `name` as float32, undoing CTranslate2's weight quantisation.

    int8 weights are stored as ``round(w * scale)`` with one scale per output row (``scale = 127 / max|row|``;
    a convolution's rows are its output channels); int16 weights with one scalar scale. Both come with a
    ``<name>_scale`` variable, and ``w = stored / scale``. Floating-point variables are widened to float32 exactly.
    """
    value = variables[name]
    scale = variables.get(name + "_scale")
    if scale is None:
        if value.dtype.kind != "f":
            raise ValueError(f"variable {name!r} is {value.dtype} without a {name}_scale: not a weight to dequantise")
        return value.astype(np.float32)
    scale = scale.astype(np.float32)
    if scale.ndim == 1:
        scale = scale.reshape((-1,) + (1,) * (value.ndim - 1))
    return (value.astype(np.float32) / scale).astype(np.float32)
