"""Reader of Core ML's weight blob file (``weights/weight.bin``, MILBlob storage format version 2).

Layout (all little-endian, every record 64-byte aligned): a 64-byte header ``{u32 count, u32 version, 7 x u64
reserved}``, then per blob a 64-byte metadata record ``{u32 sentinel 0xDEADBEEF, u32 dtype, u64 size_in_bytes,
u64 data_offset, u64 padding_size_in_bits, 4 x u64 reserved}`` followed by the data. The program refers to a
blob by the offset of its metadata record. Sub-byte types (int4, uint1/2/3/4/6) are packed least significant bit
first, element ``i`` starting at bit ``i * nbits``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

SENTINEL = 0xDEADBEEF
# BlobDataType -> (numpy storage dtype, bits per element, signed sub-byte)
BLOB_TYPES = {
    1: ("float16", 16), 2: ("float32", 32), 3: ("uint8", 8), 4: ("int8", 8), 5: ("bfloat16", 16),
    6: ("int16", 16), 7: ("uint16", 16), 8: ("int4", 4), 9: ("uint1", 1), 10: ("uint2", 2), 11: ("uint4", 4),
    12: ("uint3", 3), 13: ("uint6", 6), 14: ("int32", 32), 15: ("uint32", 32),
}


class BlobError(ValueError):
    """The weight file is missing, truncated, or does not hold what the program says it holds."""


def unpack_bits(packed: np.ndarray, nbits: int, count: int, signed: bool = False) -> np.ndarray:
    """``count`` integers of ``nbits`` bits packed LSB-first in ``packed`` (uint8) -> int8/uint8 array."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")
    if bits.size < count * nbits:
        raise BlobError(f"{bits.size} bits hold fewer than {count} values of {nbits} bits")
    bits = bits[:count * nbits].reshape(count, nbits).astype(np.int16)
    values = bits @ (1 << np.arange(nbits, dtype=np.int16))
    if signed:
        values = np.where(values >= 1 << (nbits - 1), values - (1 << nbits), values)
        return values.astype(np.int8)
    return values.astype(np.uint8)


def bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (np.asarray(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


class BlobFile:
    """One memory-mapped weight file; ``read(offset, dtype, count)`` returns the blob at ``offset``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as exc:
            raise BlobError(f"cannot read weight file {self.path.name}: {exc}") from None
        if len(self._data) < 64:
            raise BlobError(f"{self.path.name} is {len(self._data)} bytes, too short for a weight file header")
        count, version = struct.unpack_from("<II", self._data, 0)
        if version != 2:
            raise BlobError(f"{self.path.name}: weight file format version {version}, only version 2 is known")
        self.count = count

    def read(self, offset: int, dtype: str, count: int) -> np.ndarray:
        """``count`` elements of MIL type ``dtype`` stored at metadata ``offset`` (a flat array)."""
        if offset + 64 > len(self._data):
            raise BlobError(f"{self.path.name}: blob offset {offset} is past the end of the file")
        sentinel, code, size, data_offset, _pad_bits = struct.unpack_from("<IIQQQ", self._data, offset)
        if sentinel != SENTINEL:
            raise BlobError(f"{self.path.name}: no blob at offset {offset} (bad sentinel {sentinel:#x})")
        stored, nbits = BLOB_TYPES.get(code, (None, 0))
        if stored is None:
            raise BlobError(f"{self.path.name}: blob at offset {offset} has unknown data type code {code}")
        if stored != dtype:
            raise BlobError(f"{self.path.name}: blob at offset {offset} holds {stored} but the program reads "
                            f"{dtype}")
        if data_offset + size > len(self._data) or size < (count * nbits + 7) // 8:
            raise BlobError(f"{self.path.name}: blob at offset {offset} is truncated ({size} bytes for {count} "
                            f"{dtype} values)")
        raw = self._data[data_offset:data_offset + size]
        if nbits < 8:
            return unpack_bits(raw, nbits, count, signed=dtype.startswith("int"))
        if stored == "bfloat16":
            return bfloat16_to_float32(raw.view(np.uint16)[:count])
        return np.array(raw.view(stored)[:count])
