"""The Backend protocol, written once and run per format: what each backend declares (calibration, runtimes,
toolchain, file content) holds on real artifacts, and the methods stages and pipelines call instead of naming a
format (``read_graph``, ``layer_errors``, ``float_compute_ops``, ``export_qat``) work with the real toolchains.

A tiny real Keras model is built in a fixture and converted by TensorFlow Lite, OpenVINO and coremltools; QAT
exports come from a real ``QATModel`` with ranges calibrated on the committed images. No toolchain is faked.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing

import numpy as np
import pytest
from conftest import build_small_cnn

from edgeprep.backends import FORMATS, LISTED, get_backend, needing_calibration, suffix_formats
from edgeprep.backends.graph import OpGraph
from edgeprep.backends.layer_error import LayerError
from edgeprep.errors import ConversionError, DataError, InputError
from edgeprep.models import load_model
from edgeprep.stages.convert import convert, open_artifact

SAMPLES = 32


@pytest.fixture(scope="module", params=LISTED)
def fmt(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("contract-model") / "small_cnn.keras"
    build_small_cnn().save(path)
    return load_model(path)


@pytest.fixture(scope="module")
def converted(fmt, small, data, tmp_path_factory) -> dict:
    """The fp32 and int8 artifacts of ``small`` in ``fmt`` (int8 calibrated on 32 samples where it needs data)."""
    backend = get_backend(fmt)
    out = tmp_path_factory.mktemp(f"contract-{fmt}")
    return {p: convert(small, fmt, p, backend.options_type(), out / backend.artifact_name(small.name, p),
                       calibration=data.calibration, calibration_samples=SAMPLES, workdir=out / "work")
            for p in ("fp32", "int8")}


@pytest.fixture(scope="module")
def qat(small, data):
    from edgeprep.qat.model import QATModel
    from edgeprep.qat.ranges import activation_ranges

    return QATModel(small.obj, activation_ranges(small.obj, data.calibration, SAMPLES))


def test_registry_lists_every_format_once():
    assert sorted(LISTED) == sorted(FORMATS) and len(set(LISTED)) == len(LISTED)
    assert list(suffix_formats().values()) == list(LISTED)


def test_backend_declares_itself(fmt):
    from edgeprep.targets import TargetProfile
    from edgeprep.toolchain import toolchain

    backend = get_backend(fmt)
    assert backend.name == fmt and backend.suffix.startswith(".") and suffix_formats()[backend.suffix] == fmt
    assert backend.artifact_name("m", "int8") == f"m.int8{backend.suffix}"
    assert backend.content and isinstance(backend.options_type(), backend.options_type)
    assert backend.int8_io(backend.options_type()) in ("int8", "uint8", "float32")
    # float precisions never need data; the registry's helper answers what the backend says
    assert not backend.needs_calibration("fp32") and not backend.needs_calibration("fp16")
    assert needing_calibration([(fmt, "int8")]) == ([f"{fmt} int8"] if backend.needs_calibration("int8") else [])
    # runtimes: exactly the target runtimes that accept this format
    known = typing.get_args(typing.get_type_hints(TargetProfile)["runtime"])
    assert backend.runtimes and set(backend.runtimes) <= set(known)
    for runtime in known:
        make = lambda: TargetProfile("t", "", (fmt,), ("fp32",), runtime=runtime)  # noqa: E731
        if runtime == "auto" or runtime in backend.runtimes:
            make()
        else:
            with pytest.raises(ValueError, match="cannot execute"):
                make()
    # its toolchain is in every report, installed here
    tc = toolchain()
    assert backend.packages and all(tc.get(p) for p in backend.packages), (backend.packages, tc)
    # the op kinds its graphs carry are disjoint
    kinds = backend.op_kinds
    assert kinds.linear and kinds.scale and kinds.bias
    assert not (kinds.linear & kinds.scale or kinds.linear & kinds.bias or kinds.scale & kinds.bias)


def test_int8_without_calibration_data_is_refused_only_where_needed(fmt, small, tmp_path):
    backend = get_backend(fmt)
    out = tmp_path / backend.artifact_name(small.name, "int8")
    if backend.needs_calibration("int8"):
        with pytest.raises(DataError, match=f"{fmt} int8 needs calibration data"):
            convert(small, fmt, "int8", backend.options_type(), out)
        assert not out.exists()
    else:
        art = convert(small, fmt, "int8", backend.options_type(), out)
        assert backend.recognizes(art.path)


def test_artifacts_are_recognized_by_content_and_read_back(fmt, converted, tmp_path):
    backend = get_backend(fmt)
    for precision, art in converted.items():
        assert backend.recognizes(art.path), precision
        assert [f for f in FORMATS if get_backend(f).recognizes(art.path)] == [fmt]
        assert all(f.exists() for f in backend.companion_files(art.path))
        assert open_artifact(art.path).format == fmt
        graph = backend.read_graph(art.path)
        assert isinstance(graph, OpGraph) and graph.format == fmt and graph.kinds == backend.op_kinds
        assert any(op.type.split("+")[0] in backend.op_kinds.linear for op in graph.ops), \
            sorted({op.type for op in graph.ops})
    # a file named like the format whose content is not: refused, naming what it should hold
    fake = tmp_path / f"fake.fp32{backend.suffix}"
    fake.write_text("not an artifact\n")
    with pytest.raises(InputError, match=re.escape(f"its content is not {backend.content}")):
        open_artifact(fake)


def test_layer_errors(fmt, converted, data):
    from edgeprep.stages import keep_float

    backend = get_backend(fmt)
    int8, fp32 = converted["int8"], converted["fp32"]
    if not backend.measures_layer_error:
        with pytest.raises(NotImplementedError):
            backend.layer_errors(int8.path, fp32.path, np.zeros((1, 28, 28, 1), np.float32))
        report = keep_float.layer_errors(int8, None, data.evaluation, SAMPLES)
        assert report["status"] == "skipped" and report["layers"] == []
        assert report["reason"] == backend.unmeasured_layer_errors(int8)["reason"]
        return
    x, _ = data.evaluation.arrays(16)
    errs = backend.layer_errors(int8.path, fp32.path, x)
    assert len(errs) >= 4 and all(isinstance(e, LayerError) for e in errs)
    assert all(math.isfinite(e.sqnr_db) for e in errs) and min(e.sqnr_db for e in errs) < 60, errs
    assert len({e.position for e in errs}) == len(errs)
    same = backend.layer_errors(fp32.path, fp32.path, x)
    assert same and all(e.sqnr_db >= 100 for e in same)        # float against itself: (near) exact
    report = keep_float.layer_errors(int8, fp32.path, data.evaluation, 16)
    assert report["status"] == "measured" and report["samples"] == 16 and len(report["layers"]) == len(errs)


def test_qat_export(fmt, qat, small, data, tmp_path):
    backend = get_backend(fmt)
    opts = backend.options_type()
    out = tmp_path / backend.artifact_name(small.name, "int8")
    if backend.qat_reconverts:
        with pytest.raises(ConversionError, match="not exported from the QAT fake-quant graph"):
            backend.export_qat(qat, small.input_shape, out, tmp_path, opts)
        again = backend.qat_options(opts)
        assert isinstance(again, backend.options_type)
        art = convert(small, fmt, "int8", again, out, calibration=data.calibration, calibration_samples=SAMPLES)
        assert backend.recognizes(art.path)
        return
    assert backend.export_qat(qat, small.input_shape, out, tmp_path, opts) == out
    twin = backend.export_qat(qat, small.input_shape, tmp_path / f"twin{backend.suffix}", tmp_path, opts,
                              quantize=False)
    for path in (out, twin):
        assert backend.recognizes(path) and all(f.exists() for f in backend.companion_files(path))
    art = dataclasses.replace(open_artifact(out), precision="int8", quantization={"method": "qat"})
    assert art.inspection["inputs"] and sum(art.inspection["op_counts"].values()) > 3
    if backend.all_int8_qat:
        assert backend.float_compute_ops(out) == []                    # every op int8
        assert backend.float_compute_ops(twin)                         # the float twin is float
    if backend.measures_layer_error:                                   # the QAT pipeline measures against the twin
        x, _ = data.evaluation.arrays(8)
        errs = backend.layer_errors(out, twin, x)
        assert errs and all(math.isfinite(e.sqnr_db) for e in errs)
    kept = backend.export_qat(qat, small.input_shape, tmp_path / f"kept{backend.suffix}", tmp_path, opts,
                              keep=frozenset({qat.steps[-1].name}))
    assert backend.recognizes(kept)
