"""TFLite full-integer post-training quantization in two steps: calibrate once, quantize many times.

``calibrate`` converts the model to a float TFLite flatbuffer in which the converter's calibrator recorded each
activation tensor's min/max over the calibration samples. ``quantize`` turns that into a full-integer model with
per-channel int8 weights, int8 activations and the requested I/O type, optionally leaving named ops in float
(``keep``: the per-layer error report's node names). Keeping the calibrated model means the keep-float search
re-quantizes in milliseconds without re-running calibration.

Range methods: ``minmax`` keeps the calibrator's extremes; ``percentile`` replaces each activation range by the
mean over calibration batches of the per-batch percentiles (NNCF's MEAN_QUANTILE), which ignores rare outliers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprep._util import first_line
from edgeprep.data import Dataset
from edgeprep.errors import ConversionError, DataError

BATCH = 64
# Ops that convert between integer and float at the graph boundary, or move integer data without arithmetic.
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class Calibrated:
    """A float TFLite model with activation ranges recorded, and how it was calibrated."""

    flatbuffer: bytes
    samples: int
    range_method: str

    def tensor_ranges(self) -> dict[str, tuple[float, float]]:
        model = _read(self.flatbuffer)
        out = {}
        for t in model.subgraphs[0].tensors:
            q = t.quantization
            if q is not None and q.min is not None and len(q.min) == 1:
                out[t.name.decode()] = (float(q.min[0]), float(q.max[0]))
        return out


def _read(flatbuffer: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))


def _write(model) -> bytes:
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def representative(data: Dataset, samples: int):
    def gen():
        for x, _ in data.batches(BATCH, samples):
            for i in range(len(x)):
                yield [x[i:i + 1]]
    return gen


def calibrate(converter, data: Dataset | None, samples: int, range_method: str = "minmax",
              percentile: float = 99.99, cache_dir: Path | None = None, cache_key: str = "") -> Calibrated:
    """Calibrate ``converter`` (a configured ``tf.lite.TFLiteConverter``) on the first ``samples`` of ``data``.

    With ``cache_dir``, the result is stored under a key of the model, the data and the settings and reused.
    """
    import tensorflow as tf

    if data is None:
        raise DataError("int8 conversion needs calibration data", "pass --data with representative samples")
    n = min(samples, data.count)
    key = hashlib.sha256(f"{cache_key}|{data.source}|{n}|{range_method}|{percentile}".encode()).hexdigest()[:16]
    cached = (cache_dir / f"calibrated-{key}.tflite") if cache_dir is not None else None
    if cached is not None and cached.exists():
        return Calibrated(cached.read_bytes(), n, range_method)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative(data, n)
    converter._experimental_calibrate_only = True
    try:
        flat = converter.convert()
    except DataError:
        raise
    except Exception as exc:
        raise ConversionError(f"TFLite calibration failed: {first_line(exc)}",
                              "ops outside TFLite's builtin set need a model change") from None
    if range_method == "percentile":
        flat = _with_percentile_ranges(flat, data, n, percentile)
    result = Calibrated(flat, n, range_method)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(flat)
    return result


def _with_percentile_ranges(flat: bytes, data: Dataset, n: int, percentile: float) -> bytes:
    """Replace recorded activation min/max by the mean over batches of the per-batch percentiles."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model = _read(flat)
    sg = model.subgraphs[0]
    input_ids = set(int(i) for i in sg.inputs)
    targets = [i for i, t in enumerate(sg.tensors)
               if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1
               and i not in input_ids]      # the model input keeps its full range: clipping inputs surprises users
    it = Interpreter(model_content=flat, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    inp = it.get_input_details()[0]
    lows: dict[int, list[float]] = {i: [] for i in targets}
    highs: dict[int, list[float]] = {i: [] for i in targets}
    for x, _ in data.batches(BATCH, n):
        it.resize_tensor_input(inp["index"], list(x.shape))
        it.allocate_tensors()
        it.set_tensor(inp["index"], x)
        it.invoke()
        for i in targets:
            v = it.get_tensor(i).reshape(-1)
            lows[i].append(float(np.percentile(v, 100.0 - percentile)))
            highs[i].append(float(np.percentile(v, percentile)))
    for i in targets:
        q = sg.tensors[i].quantization
        lo, hi = min(0.0, float(np.mean(lows[i]))), max(0.0, float(np.mean(highs[i])))
        if hi - lo > 0:
            q.min, q.max = np.array([lo], np.float32), np.array([hi], np.float32)
    return _write(model)


def quantize(cal: Calibrated, io: str, keep: tuple[str, ...] = ()) -> bytes:
    """Full-integer model from a calibrated one: int8 weights (per channel) and activations, ``io`` I/O types.

    ``keep`` names ops (by their output tensor in the calibrated model) to leave in float.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert

    dtype = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io]
    known = set(cal.tensor_ranges()) | {t.name.decode() for t in _read(cal.flatbuffer).subgraphs[0].tensors}
    unknown = [k for k in keep if k not in known]
    if unknown:
        from edgeprep.errors import ConfigError

        raise ConfigError(f"keep_float names unknown TFLite node(s): {', '.join(unknown[:3])}",
                          "use the node names listed in the per-layer error report (layer_errors[].node)")
    try:
        # as TFLiteConverter calls it (fully_quantize=True would force int8 I/O whatever is asked)
        return bytes(convert.mlir_quantize(cal.flatbuffer, input_data_type=dtype, output_data_type=dtype,
                                           denylisted_nodes=list(keep) or None))
    except Exception as exc:
        raise ConversionError(f"TFLite int8 quantization failed: {first_line(exc)}") from None


def float_ops(interpreter) -> dict[str, int]:
    """Compute ops that run in float in a TFLite model, by op name (QUANTIZE/DEQUANTIZE are conversions, and
    ops on integer index tensors such as SHAPE are not float compute)."""
    details = interpreter.get_tensor_details()
    counts: dict[str, int] = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] in BOUNDARY_OPS or op["op_name"] == "DELEGATE":
            continue
        tensors = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if any(np.issubdtype(details[i]["dtype"], np.floating) for i in tensors):
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts
