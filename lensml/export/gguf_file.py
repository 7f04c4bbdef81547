"""A GGUF file copied with some tensors replaced, its key-values carried over as raw bytes.

gguf-py's reader parses every key-value into numpy views, element by element: about
5 s for SmolLM2's 49k-token vocabulary and merges, only for the writer to pack them all
again. A copy needs none of that: the key-value section is copied as it stands, and only
the tensor table (types and offsets of the replaced tensors change) is written anew.
Layout (GGUF v2/v3, little-endian): header, key-values, tensor table, padding to the
alignment, tensor data (each tensor at a multiple of the alignment).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from lensml.errors import LensError

_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUFValueType -> bytes
_STRING, _ARRAY = 8, 9
DEFAULT_ALIGNMENT = 32


@dataclass
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # ggml order: the fastest-varying dimension first
    type: int  # GGMLQuantizationType value
    offset: int  # from the start of the data section

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n


def nbytes(n_elements: int, qtype: int) -> int:
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
    return n_elements // block * size


class GGUFFile:
    """The parts of a GGUF file a copy needs: raw key-values, the tensor table, where data starts."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self.buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        magic, self.version, n_tensors, self.n_kv = struct.unpack_from("<4sIQQ", self.buf, 0)
        if magic != b"GGUF" or not 2 <= self.version <= 3:
            raise LensError(f"{self.path} is not a little-endian GGUF v2/v3 file: use --gguf-out with another source")
        pos, self.alignment, self.architecture = 24, DEFAULT_ALIGNMENT, None
        self._values: dict[str, tuple[int, int]] = {}  # key -> (value type, where its value starts)
        for _ in range(self.n_kv):
            key, pos = self._string(pos)
            (vtype,), pos = struct.unpack_from("<I", self.buf, pos), pos + 4
            self._values[key] = (vtype, pos)
            if key == "general.alignment" and vtype == 4:
                self.alignment = struct.unpack_from("<I", self.buf, pos)[0]
            if key == "general.architecture" and vtype == _STRING:
                self.architecture = self._string(pos)[0]
            pos = self._skip(pos, vtype)
        self.kv_bytes = self.buf[24:pos]
        self.tensors: list[TensorInfo] = []
        for _ in range(n_tensors):
            name, pos = self._string(pos)
            (n_dims,) = struct.unpack_from("<I", self.buf, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", self.buf, pos + 4)
            qtype, offset = struct.unpack_from("<IQ", self.buf, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            self.tensors.append(TensorInfo(name, tuple(dims), qtype, offset))
        self.data_start = _aligned(pos, self.alignment)

    def _string(self, pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", self.buf, pos)
        return self.buf[pos + 8:pos + 8 + n].decode("utf-8"), pos + 8 + n

    def _skip(self, pos: int, vtype: int) -> int:
        if vtype in _SCALAR:
            return pos + _SCALAR[vtype]
        if vtype == _STRING:
            return pos + 8 + struct.unpack_from("<Q", self.buf, pos)[0]
        if vtype == _ARRAY:
            etype, count = struct.unpack_from("<IQ", self.buf, pos)
            pos += 12
            if etype in _SCALAR:
                return pos + count * _SCALAR[etype]
            for _ in range(count):
                pos = self._skip(pos, etype)
            return pos
        raise LensError(f"{self.path}: unknown GGUF value type {vtype}")

    def array_string(self, key: str, index: int) -> str | None:
        """Item `index` of a string-array key-value (a token's text by its id), None if there is none."""
        vtype, pos = self._values.get(key, (None, 0))
        if vtype != _ARRAY:
            return None
        etype, count = struct.unpack_from("<IQ", self.buf, pos)
        if etype != _STRING or not 0 <= index < count:
            return None
        pos += 12
        for _ in range(index):
            pos += 8 + struct.unpack_from("<Q", self.buf, pos)[0]
        return self._string(pos)[0]

    def data(self, t: TensorInfo) -> memoryview:
        start = self.data_start + t.offset
        return memoryview(self.buf)[start:start + nbytes(t.n_elements, t.type)]

    def close(self) -> None:
        self.buf.close()


def _aligned(n: int, alignment: int) -> int:
    return n + (-n) % alignment


def _packed_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def write_copy(source: GGUFFile, target: str | Path, replaced: dict[str, tuple[bytes, int]]) -> None:
    """Write source to target with the tensors named in `replaced` as (raw bytes, type); all else verbatim."""
    infos, offset = [], 0
    for t in source.tensors:
        qtype = replaced[t.name][1] if t.name in replaced else t.type
        size = nbytes(t.n_elements, qtype)
        if t.name in replaced and len(replaced[t.name][0]) != size:
            raise LensError(f"GGUF export: {t.name} has {len(replaced[t.name][0])} bytes, its shape needs {size}")
        infos.append((t, qtype, offset))
        offset = _aligned(offset + size, source.alignment)
    with open(target, "wb") as f:
        f.write(struct.pack("<4sIQQ", b"GGUF", source.version, len(source.tensors), source.n_kv))
        f.write(source.kv_bytes)
        for t, qtype, off in infos:
            f.write(_packed_string(t.name) + struct.pack(f"<I{len(t.dims)}QIQ", len(t.dims), *t.dims, qtype, off))
        f.write(b"\0" * ((-f.tell()) % source.alignment))
        start = f.tell()
        for t, _qtype, off in infos:
            f.write(b"\0" * (start + off - f.tell()))
            f.write(replaced[t.name][0] if t.name in replaced else source.data(t))
