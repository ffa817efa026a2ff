"""A minimal reader of the protobuf wire format: just enough to walk Core ML's ``model.mlmodel``.

Why not the ``protobuf`` package with coremltools' generated ``Model_pb2``/``MIL_pb2``: importing anything under
``coremltools`` runs its top-level ``__init__``, which probes for and imports TensorFlow (measured: 3.8 s and
``tensorflow``/``keras`` in ``sys.modules``), and device_bench must run without either. The wire format is small
and stable (https://protobuf.dev/programming-guides/encoding/): a message is a sequence of (field number, wire
type, payload) records. ``fields`` splits a message into those records once; typed accessors read them.
"""

from __future__ import annotations

import struct
from collections import defaultdict

import numpy as np

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def fields(buf: bytes) -> dict[int, list]:
    """Field number -> payloads in order: ints for VARINT/I64/I32 records, ``bytes`` for LEN records."""
    out: dict[int, list] = defaultdict(list)
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(buf, pos)
        elif wire == LEN:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise WireError(f"field {number}: length {size} runs past the end of the message")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == I64:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == I32:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise WireError(f"field {number}: unsupported wire type {wire}")
        if pos > end:
            raise WireError(f"field {number}: truncated")
        out[number].append(value)
    return out


class Message:
    """One decoded message: typed, lazily decoded access to its fields by number."""

    __slots__ = ("_f",)

    def __init__(self, buf: bytes):
        self._f = fields(buf)

    def has(self, n: int) -> bool:
        return n in self._f

    def msg(self, n: int) -> "Message | None":
        v = self._f.get(n)
        return Message(v[-1]) if v else None

    def msgs(self, n: int) -> list["Message"]:
        return [Message(v) for v in self._f.get(n, ())]

    def str(self, n: int, default: str = "") -> str:
        v = self._f.get(n)
        return bytes(v[-1]).decode("utf-8") if v else default

    def strs(self, n: int) -> list[str]:
        return [bytes(v).decode("utf-8") for v in self._f.get(n, ())]

    def bytes(self, n: int) -> bytes:
        v = self._f.get(n)
        return bytes(v[-1]) if v else b""

    def int(self, n: int, default: int = 0, signed: bool = True) -> int:
        v = self._f.get(n)
        if not v:
            return default
        return _signed64(v[-1]) if signed else v[-1]

    def bool(self, n: int) -> bool:
        return bool(self.int(n, 0))

    def map(self, n: int) -> dict[str, "Message"]:
        """A ``map<string, Message>`` field (repeated entries with key = 1, value = 2)."""
        out = {}
        for raw in self._f.get(n, ()):
            entry = fields(raw)
            key = bytes(entry[1][-1]).decode("utf-8") if 1 in entry else ""
            out[key] = Message(entry[2][-1] if 2 in entry else b"")
        return out

    # Repeated scalars: packed (one LEN record) or not (one record per value); both are valid encodings.
    def varints(self, n: int) -> list[int]:
        vals: list[int] = []
        for v in self._f.get(n, ()):
            if isinstance(v, int):
                vals.append(v)
            else:
                pos, buf = 0, bytes(v)
                while pos < len(buf):
                    x, pos = _varint(buf, pos)
                    vals.append(x)
        return [_signed64(x) for x in vals]

    def fixed(self, n: int, fmt: str) -> np.ndarray:
        """Repeated ``float`` (fmt ``'<f4'``) or ``double`` (``'<f8'``) values."""
        size = np.dtype(fmt).itemsize
        parts = []
        for v in self._f.get(n, ()):
            parts.append(struct.pack("<I" if size == 4 else "<Q", v) if isinstance(v, int) else bytes(v))
        return np.frombuffer(b"".join(parts), dtype=fmt)


def _signed64(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x
