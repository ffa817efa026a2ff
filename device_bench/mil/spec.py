"""The parts of an ``.mlpackage`` the executor needs, decoded from the protobuf spec into plain values.

``read_spec(package)`` -> ``ModelSpec``: the model's declared inputs/outputs and the ``main`` function of its ML
Program as a list of ``OpSpec`` (type, input bindings, declared output types, attributes) with every constant
value decoded to numpy (immediate values from the spec, blob values from ``weights/weight.bin``). Field numbers
follow coremltools' ``Model.proto`` and ``MIL.proto`` (format version 1.0, spec versions 6 to 9).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device_bench.mil.blob import BlobError, BlobFile, bfloat16_to_float32, unpack_bits
from device_bench.mil.dtypes import CODES as DTYPES
from device_bench.mil.dtypes import STORAGE, SUB_BYTE_BITS
from device_bench.mil.errors import SpecError
from device_bench.mil.wire import Message, WireError

ARRAY_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32", 131080: "int8"}


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[int | None, ...] | None     # None: rank unknown; None entries: unknown dimensions

    def describe(self) -> str:
        dims = "?" if self.shape is None else ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


class Ref(str):
    """An op input bound to a variable (by name), as opposed to a value given inline."""


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass
class OpSpec:
    type: str
    name: str
    inputs: dict[str, list]                  # parameter -> bindings: a variable (Ref) or a decoded value
    outputs: list[tuple[str, TensorType | None]]
    attributes: dict[str, Any] = field(default_factory=dict)
    has_blocks: bool = False


@dataclass
class ModelSpec:
    spec_version: int
    opset: str
    inputs: list[Feature]
    outputs: list[Feature]
    function_inputs: list[tuple[str, TensorType | None]]
    ops: list[OpSpec]
    block_outputs: list[str]


def _tensor_type(vt: Message | None) -> TensorType | None:
    """A ValueType; None for list/tuple/dict/state types (which no supported op produces)."""
    if vt is None:
        return None
    tt = vt.msg(1)
    if tt is None:
        return None
    code = tt.int(1)
    if code not in DTYPES:
        raise SpecError(f"unknown MIL data type code {code}")
    dims = []
    for d in tt.msgs(3):
        const = d.msg(1)
        dims.append(const.int(1) if const is not None else None)
    rank = tt.int(2, default=len(dims))
    if rank < 0:
        return TensorType(DTYPES[code], None)
    return TensorType(DTYPES[code], tuple(dims) if dims or rank == 0 else (None,) * rank)


def _size(t: TensorType) -> int:
    if t.shape is None or any(d is None for d in t.shape):
        raise SpecError(f"a constant of type {t.describe()} has no static shape")
    return int(np.prod(t.shape, dtype=np.int64))


def _from_bytes(raw: bytes, t: TensorType) -> np.ndarray:
    n = _size(t)
    if t.dtype in SUB_BYTE_BITS:
        return unpack_bits(np.frombuffer(raw, np.uint8), SUB_BYTE_BITS[t.dtype], n, t.dtype.startswith("int"))
    if t.dtype == "bfloat16":
        return bfloat16_to_float32(np.frombuffer(raw, np.uint16)[:n])
    return np.frombuffer(raw, STORAGE[t.dtype])[:n]


def _immediate(imm: Message, t: TensorType | None) -> Any:
    tensor = imm.msg(1)
    if tensor is None:
        if imm.has(3):
            raise SpecError("list-valued constants are not supported")
        if imm.has(2):
            raise SpecError("tuple-valued constants are not supported")
        raise SpecError("dictionary-valued constants are not supported")
    if t is None:
        raise SpecError("a tensor value without a tensor type")
    if tensor.has(4):                                  # strings
        vals = tensor.msg(4).strs(1)
        return vals[0] if t.shape == () and vals else np.array(vals, dtype=object).reshape(t.shape or (-1,))
    if tensor.has(1):
        flat = tensor.msg(1).fixed(1, "<f4")
    elif tensor.has(6):
        flat = tensor.msg(6).fixed(1, "<f8")
    elif tensor.has(2) or tensor.has(5) or tensor.has(3):
        flat = np.array(tensor.msg(next(n for n in (2, 5, 3) if tensor.has(n))).varints(1), dtype=np.int64)
    elif tensor.has(7):
        flat = _from_bytes(tensor.msg(7).bytes(1), t)
    else:
        flat = np.zeros(0, STORAGE.get(t.dtype, np.float32))
    if t.dtype not in STORAGE:
        raise SpecError(f"constants of type {t.dtype} are not supported")
    return np.asarray(flat).astype(STORAGE[t.dtype]).reshape(t.shape if t.shape is not None else (-1,))


class _Blobs:
    def __init__(self, weights_dir: Path):
        self.dir, self.files = weights_dir, {}

    def read(self, file_value: Message, t: TensorType) -> np.ndarray:
        name = file_value.str(1).split("/")[-1]
        if name not in self.files:
            path = self.dir / name
            if not path.is_file():
                raise SpecError(f"the program refers to weights/{name}, which is missing from the package")
            self.files[name] = BlobFile(path)
        if t.dtype not in STORAGE:
            raise SpecError(f"weights of type {t.dtype} are not supported")
        flat = self.files[name].read(file_value.int(2, signed=False), t.dtype, _size(t))
        return flat.astype(STORAGE[t.dtype], copy=False).reshape(t.shape)


def _value(v: Message, blobs: _Blobs) -> Any:
    t = _tensor_type(v.msg(2))
    if v.has(5):
        return blobs.read(v.msg(5), t)
    if v.has(3):
        return _immediate(v.msg(3), t)
    raise SpecError("a value with neither an immediate nor a blob payload")


def _op(m: Message, blobs: _Blobs) -> OpSpec:
    op_type = m.str(1)
    inputs = {}
    for param, arg in m.map(2).items():
        bindings = []
        for b in arg.msgs(1):
            bindings.append(Ref(b.str(1)) if b.has(1) else _value(b.msg(2), blobs))
        inputs[param] = bindings
    outputs = [(o.str(1), _tensor_type(o.msg(2))) for o in m.msgs(3)]
    attrs = {k: _value(v, blobs) for k, v in m.map(5).items()}
    name = attrs.pop("name", None)
    return OpSpec(op_type, str(name) if name else (outputs[0][0] if outputs else op_type), inputs, outputs, attrs,
                  has_blocks=m.has(4))


def _feature(f: Message) -> Feature:
    name = f.str(1)
    ft = f.msg(3)
    arr = ft.msg(5) if ft is not None else None
    if arr is None:
        kinds = {1: "int64", 2: "double", 3: "string", 4: "image", 6: "dictionary", 7: "sequence", 8: "state"}
        kind = next((k for n, k in kinds.items() if ft is not None and ft.has(n)), "unknown")
        raise SpecError(f"feature '{name}' is a {kind} feature; only multi-array inputs and outputs are supported")
    code = arr.int(2)
    return Feature(name, ARRAY_DTYPES.get(code, f"code {code}"), tuple(arr.varints(1)))


def model_file(package: Path) -> tuple[Path, Path]:
    """The spec file and the weights directory of an ``.mlpackage`` (read from its Manifest.json)."""
    package = Path(package)
    if package.is_file() and package.suffix == ".mlmodel":
        return package, package.parent / "weights"
    manifest = package / "Manifest.json"
    if not manifest.is_file():
        raise SpecError(f"{package.name} has no Manifest.json; it is not an .mlpackage")
    try:
        info = json.loads(manifest.read_text())
        root = info["itemInfoEntries"][info["rootModelIdentifier"]]["path"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"{package.name}/Manifest.json is unreadable ({exc})") from None
    spec = package / "Data" / root
    if not spec.is_file():
        raise SpecError(f"{package.name}: the model spec {root} named by Manifest.json is missing")
    return spec, spec.parent / "weights"


def read_spec(package: str | Path, function: str | None = None) -> ModelSpec:
    """Decode the package's spec and its ``main`` (or ``function``) ML Program function, constants included."""
    spec_path, weights_dir = model_file(Path(package))
    try:
        model = Message(spec_path.read_bytes())
        program = model.msg(502)
        if program is None:
            raise SpecError(f"{Path(package).name} is not an ML Program (a neuralnetwork-format or other Core ML "
                            "model); the reference executor runs ML Programs only")
        desc = model.msg(2)
        functions = program.map(2)
        name = function or (desc.str(21) if desc is not None and desc.has(21) else "main")
        if name not in functions:
            raise SpecError(f"the program has no function '{name}' (it has {', '.join(functions) or 'none'})")
        fn = functions[name]
        opset = fn.str(2)
        blocks = fn.map(3)
        if opset not in blocks:
            raise SpecError(f"function '{name}' has no block for its opset {opset}")
        block = blocks[opset]
        blobs = _Blobs(weights_dir)
        ops = [_op(o, blobs) for o in block.msgs(3)]
        return ModelSpec(
            spec_version=model.int(1), opset=opset,
            inputs=[_feature(f) for f in desc.msgs(1)] if desc is not None else [],
            outputs=[_feature(f) for f in desc.msgs(10)] if desc is not None else [],
            function_inputs=[(i.str(1), _tensor_type(i.msg(2))) for i in fn.msgs(1)],
            ops=ops, block_outputs=block.strs(2))
    except (WireError, BlobError) as exc:
        raise SpecError(f"{Path(package).name}: {exc}") from None
