"""ONNX models as input: converted once, at load, into a Keras 3 Functional model that every stage and format uses.

``to_keras(handle, preprocess, data)`` takes the ONNX Runtime handle ``edgeprep.models.load_model`` returns for an
``.onnx`` file and gives a Keras handle whose ``obj`` is the converted graph (NHWC, BatchNormalization layers kept
unfused) and whose float reference (``predict``) stays ONNX Runtime on the original file. The converted graph is
checked against ONNX Runtime before anything else runs (``TOLERANCE``, relative to the largest output); a graph
that disagrees is refused. Modules: ``layout`` (the input's layout and dynamic dimensions), ``graph`` (values and
their storage), ``ops`` (one converter per operator), ``convert`` (the walk), ``reference`` (ONNX Runtime).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgeprep.errors import ConversionError
from edgeprep.onnx.graph import UnsupportedOp
from edgeprep.onnx.layout import InputPlan, plan_input

TOLERANCE = 1e-4          # max |Keras - ONNX Runtime| / max |ONNX Runtime| at load
CHECK_SAMPLES = 32


def supported_ops() -> tuple[str, ...]:
    from edgeprep.onnx.ops import SUPPORTED

    return SUPPORTED


def to_keras(handle, preprocess=None, data=None, input_shape: tuple[int, ...] | None = None,
             layout_given: bool | None = None):
    """The Keras handle of the ONNX model ``handle`` (see the module docstring).

    ``preprocess`` (``edgeprep.data.Preprocess``) gives the layout the data and artifacts use and, without data, a
    ``resize``/``channels`` for dynamic dimensions; ``data`` (a ``Dataset``) fixes dynamic dimensions from its
    sample shape and supplies the samples the converted graph is checked on. ``layout_given`` says whether the
    layout was asked for (for the report; default: it differs from NHWC).
    """
    import onnx

    from edgeprep._util import quiet
    from edgeprep.data import Preprocess
    from edgeprep.onnx.convert import convert_graph
    from edgeprep.onnx.reference import OnnxReference

    if handle.kind != "onnx":
        return handle
    preprocess = preprocess or (data.preprocess if data is not None else Preprocess())
    layout = preprocess.layout
    proto = onnx.load(str(handle.path))
    sample = shape_source = None
    if data is not None:
        sample, shape_source = tuple(data.sample_shape), f"the data ({data.source})"
    elif preprocess.resize is not None:
        h, w = preprocess.resize
        c = preprocess.channels
        sample = (c, h, w) if layout == "NCHW" else (h, w, c)
        shape_source = "--resize / [preprocess] resize"
    plan = plan_input(proto.graph, layout, layout != "NHWC" if layout_given is None else layout_given,
                      sample, input_shape, shape_source or "the data", where=str(handle.path))
    with quiet():
        converted = convert_graph(proto, plan, handle.name)
    ref = OnnxReference(handle.path, handle.obj, handle.input_name, plan, converted.bn, converted.ops,
                        converted.folded_nodes)
    agreement = check(converted.model, ref, data, plan)
    ref = replace(ref, agreement=agreement)
    out_shape = tuple(converted.model.outputs[0].shape)[1:]
    return replace(handle, kind="keras", obj=converted.model, input_name=handle.input_name,
                   input_shape=plan.shape, output_shape=tuple(None if d is None else int(d) for d in out_shape),
                   onnx=ref)


def check(model, ref, data, plan: InputPlan):
    """The converted graph against ONNX Runtime on the data's first samples (random ones without data)."""
    from edgeprep._util import quiet
    from edgeprep.onnx.reference import Agreement

    if data is not None and tuple(data.sample_shape) == plan.shape:
        x, _ = data.arrays(CHECK_SAMPLES)
        source = f"the first {len(x)} samples of {data.source}"
    else:
        x = np.random.default_rng(0).normal(0, 1, (8, *plan.shape)).astype(np.float32)
        source = "8 random normal inputs"
    want = ref.run(x)
    with quiet():
        got = np.asarray(model(x, training=False))
    if got.shape != want.shape:
        raise ConversionError(f"{ref.path.name}: the Keras graph converted from it outputs {list(got.shape)} where "
                              f"ONNX Runtime outputs {list(want.shape)}", "report this model to edgeprep")
    err = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    agreement = Agreement(len(x), source, err, err / scale if scale > 0 else (0.0 if err == 0 else np.inf), TOLERANCE)
    if not agreement.passed:
        raise ConversionError(f"{ref.path.name}: the Keras graph converted from it disagrees with ONNX Runtime "
                              f"(max |error| {err:.3g}, {agreement.max_rel:.3g} of the largest output, above "
                              f"{TOLERANCE:g}, on {source})",
                              "nothing was converted; report the model to edgeprep (an op is converted wrongly)")
    return agreement


__all__ = ["CHECK_SAMPLES", "TOLERANCE", "InputPlan", "UnsupportedOp", "plan_input", "supported_ops", "to_keras"]
