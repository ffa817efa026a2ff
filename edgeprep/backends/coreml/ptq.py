"""Core ML int8: coremltools.optimize weight compression, and activation quantization where it can run.

Weights: 8-bit linear symmetric per channel (W8A16) or k-means palettization with a 4-, 6- or 8-bit lookup
table per tensor. Activations: ``linear_quantize_activations`` calibrates by running the model with Core ML,
which only macOS can do; elsewhere activations stay fp16 and the report says why.
"""

from __future__ import annotations

import platform

import numpy as np

from edgeprep._util import first_line
from edgeprep.artifact import ConvertRequest
from edgeprep.config.formats import CoreMLOptions

ACTIVATIONS_UNAVAILABLE = ("8-bit activations were not applied: coremltools calibrates them by Core ML "
                           "prediction, which runs on macOS only (this is {system}); activations stay fp16")


def compress(mlmodel, request: ConvertRequest, opts: CoreMLOptions):
    """The compressed model, its ``quantization`` description and notes."""
    import coremltools.optimize as cto

    original = mlmodel
    notes: list[str] = []
    quant: dict = {"io": "float32", "weight_threshold": opts.weight_threshold, "activations": "fp16"}
    if opts.weight_compression == "linear8":
        cfg = cto.coreml.OptimizationConfig(global_config=cto.coreml.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=opts.weight_threshold))
        mlmodel = cto.coreml.linear_quantize_weights(mlmodel, cfg)
        quant["weights"] = "int8 per-channel (linear symmetric)"
    else:
        bits = int(opts.weight_compression.removeprefix("palettize"))
        cfg = cto.coreml.OptimizationConfig(global_config=cto.coreml.OpPalettizerConfig(
            mode="kmeans", nbits=bits, granularity="per_tensor", weight_threshold=opts.weight_threshold))
        mlmodel = cto.coreml.palettize_weights(mlmodel, cfg)
        quant["weights"] = f"{bits}-bit palettized (k-means lookup table per tensor)"
    try:
        quant["weight_sqnr"] = weight_errors(original, mlmodel)[:20]   # worst first
    except Exception as exc:  # decompression is a diagnostic: never fail the conversion for it
        notes.append(f"weight SQNR unavailable ({first_line(exc)})")
    if opts.quantize_activations:
        system = platform.system()
        if system != "Darwin":
            quant["activations"] = "fp16 (8-bit activations not applied: needs macOS)"
            notes.append(ACTIVATIONS_UNAVAILABLE.format(system=system))
        else:  # pragma: no cover - macOS only
            samples = [{None: x[i:i + 1]} for x, _ in request.calibration.batches(64, request.calibration_samples)
                       for i in range(len(x))] if request.calibration is not None else []
            if samples:
                exp = cto.coreml.experimental
                acfg = cto.coreml.OptimizationConfig(
                    global_config=exp.OpActivationLinearQuantizerConfig(mode="linear_symmetric"))
                mlmodel = exp.linear_quantize_activations(mlmodel, acfg, samples)
                quant["activations"] = "int8 (linear symmetric, calibrated)"
    return mlmodel, quant, notes


def weight_errors(original, compressed) -> list[dict]:
    """SQNR (dB) of every compressed weight tensor against its uncompressed value, worst first.

    Works without executing the model: ``decompress_weights`` turns the constexpr ops back into constants, which
    are matched by name with the uncompressed program's constants.
    """
    import coremltools.optimize as cto

    def consts(model) -> dict[str, np.ndarray]:
        out = {}
        prog = model._mil_program
        for fn in prog.functions.values():
            for op in fn.find_ops(op_type="const"):
                val = op.outputs[0].val
                if isinstance(val, np.ndarray) and val.size > 1 and np.issubdtype(val.dtype, np.floating):
                    out[op.name] = val.astype(np.float64)
        return out

    ref = consts(original)
    dec = consts(cto.coreml.decompress_weights(compressed))
    rows = []
    for name, q in dec.items():
        for suffix in ("_quantized", "_palettized"):   # the compressed op keeps the weight's name plus a suffix
            name = name.removesuffix(suffix)
        r = ref.get(name)
        if r is None or r.shape != q.shape:
            continue
        noise = float(np.sum((r - q) ** 2))
        if noise == 0.0:
            continue  # left uncompressed (below weight_threshold)
        rows.append({"name": name, "elements": int(r.size),
                     "sqnr_db": round(10 * np.log10(max(float(np.sum(r ** 2)), 1e-30) / noise), 3)})
    return sorted(rows, key=lambda d: d["sqnr_db"])
