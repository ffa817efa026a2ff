"""OpenVINO int8 by NNCF post-training quantization, driven by the target's ``[openvino]`` and ``[quantize]``.

Preset (symmetric or asymmetric activations), bias correction (fast, accurate or none), the ignored scope plus
the layers the keep-float search chose, the activation range estimator (``range_method``), and NNCF's
accuracy-controlled mode, which reverts layers to float until the drop on the calibration data is within the
target's int8 ``max_accuracy_drop`` (top-1 accuracy when the data is labelled, else top-1 agreement with the
float model).
"""

from __future__ import annotations

import numpy as np

from edgeprep._util import first_line
from edgeprep.artifact import ConvertRequest
from edgeprep.config.formats import OpenVINOOptions
from edgeprep.errors import ConfigError, ConversionError, DataError


def _samples(request: ConvertRequest) -> tuple[list[np.ndarray], np.ndarray | None]:
    if request.calibration is None:
        raise DataError("int8 conversion needs calibration data", "pass --data with representative samples")
    xs, ys = [], []
    for x, y in request.calibration.batches(64, request.calibration_samples):
        xs += [x[i:i + 1] for i in range(len(x))]
        if y is not None:
            ys.append(y)
    return xs, (np.concatenate(ys) if ys else None)


def _advanced(request: ConvertRequest, opts: OpenVINOOptions):
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import (
        AggregatorType,
        RangeEstimatorParameters,
        RangeEstimatorParametersSet,
        StatisticsCollectorParameters,
        StatisticsType,
    )

    q = request.quantize
    kwargs: dict = {"disable_bias_correction": opts.bias_correction == "none"}
    if q.range_method == "minmax":
        kwargs["activations_range_estimator_params"] = RangeEstimatorParametersSet.MINMAX
    else:
        prob = (100.0 - q.percentile) / 100.0
        stat = StatisticsCollectorParameters(statistics_type=StatisticsType.QUANTILE,
                                             aggregator_type=AggregatorType.MEAN, quantile_outlier_prob=prob)
        kwargs["activations_range_estimator_params"] = RangeEstimatorParameters(min=stat, max=stat)
    return AdvancedQuantizationParameters(**kwargs)


def _ignored(request: ConvertRequest, opts: OpenVINOOptions, ov_model):
    import nncf

    from edgeprep.backends.openvino.layer_error import resolve_ov_nodes

    scope = opts.ignored_scope
    names = resolve_ov_nodes(ov_model, list(scope.names) + list(request.keep_float))
    if not (names or scope.patterns or scope.types):
        return None
    return nncf.IgnoredScope(names=names, patterns=list(scope.patterns), types=list(scope.types))


def quantize(ov_model, request: ConvertRequest, opts: OpenVINOOptions):
    """Return the quantized ``ov.Model`` and the ``quantization`` description for the report."""
    import nncf

    xs, labels = _samples(request)
    preset = nncf.QuantizationPreset.PERFORMANCE if opts.nncf_preset == "performance" \
        else nncf.QuantizationPreset.MIXED
    common = dict(preset=preset, subset_size=len(xs), fast_bias_correction=opts.bias_correction != "accurate",
                  ignored_scope=_ignored(request, opts, ov_model))
    advanced = _advanced(request, opts)
    quant = {"weights": "int8 per-channel", "activations": "int8 (FakeQuantize)", "io": "float32",
             "calibration_samples": len(xs), "range_method": request.quantize.range_method,
             "method": f"nncf ptq, preset {opts.nncf_preset}, bias correction {opts.bias_correction}"}
    if common["ignored_scope"] is not None:
        quant["kept_float"] = sorted(set(opts.ignored_scope.names) | set(request.keep_float))
    try:
        if not opts.accuracy_control:
            return nncf.quantize(ov_model, nncf.Dataset(xs), advanced_parameters=advanced, **common), quant
        if request.max_accuracy_drop is None:
            raise ConfigError("[openvino] accuracy_control needs a maximum accuracy drop",
                              "set [gates.int8] max_accuracy_drop (points) in the target")
        targets, metric = _validation_targets(ov_model, xs, labels)
        validation = nncf.Dataset(list(zip(xs, targets)))
        model = nncf.quantize_with_accuracy_control(
            ov_model, nncf.Dataset(xs), validation, _top1, max_drop=request.max_accuracy_drop / 100.0,
            drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=advanced, **common)
    except (ConfigError, DataError):
        raise
    except Exception as exc:
        msg = first_line(exc)
        if "ignored" in msg.lower() or "scope" in msg.lower():
            raise ConfigError(f"NNCF ignored scope: {msg}",
                              "use node names of the float OpenVINO model (see the per-layer error report)") from None
        raise ConversionError(f"NNCF quantization failed: {msg}") from None
    quant["method"] += f", accuracy control (max drop {request.max_accuracy_drop} pts of {metric})"
    return model, quant


def _validation_targets(ov_model, xs: list[np.ndarray], labels: np.ndarray | None):
    """Labels when the calibration data has them, else the float model's own top-1 classes."""
    if labels is not None:
        return labels, "top-1 accuracy on the calibration data"
    import openvino as ov

    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return [int(np.argmax(compiled(x)[0])) for x in xs], "top-1 agreement with the float model"


def _top1(compiled_model, dataset) -> float:
    hits = [int(np.argmax(compiled_model(x)[0]) == int(t)) for x, t in dataset]
    return float(np.mean(hits))
