"""Backend contract: every format x precision converts a real trained model, and verification measures it.

Written once, run per backend (tflite, openvino, coreml) and precision. Artifacts run through the real runtime
(LiteRT, OpenVINO); Core ML ML Programs through edgeprep's reference executor (Core ML itself is macOS-only).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_small_cnn

from edgeprep.backends import get_backend
from edgeprep.config.gates import Thresholds
from edgeprep.errors import ConversionError, DataError
from edgeprep.models import load_model
from edgeprep.stages.convert import convert, open_artifact
from edgeprep.stages.verify import reference, verify

# Minimum agreement with the float model and SQNR per precision, for a small trained CNN on 500 real images.
# fp32 must be numerically the same model; fp16 weights lose ~3 decimal digits; int8 is a real approximation.
EXPECT = {"fp32": (0.998, 90.0), "fp16": (0.99, 50.0), "int8": (0.93, 18.0)}
CASES = [(f, p) for f in ("tflite", "openvino", "coreml") for p in ("fp32", "fp16", "int8")]


@pytest.fixture(scope="module")
def small(trained_small, tmp_path_factory):
    """The model's handle, its SavedModel (what OpenVINO converts from) exported once for the module's
    conversions instead of once per OpenVINO conversion."""
    handle = load_model(trained_small)
    handle.saved_model_dir(tmp_path_factory.mktemp("savedmodel"))
    return handle


@pytest.fixture(scope="module")
def ref(small, data):
    r = reference(small, data.evaluation, limit=500)
    # a constant predictor would agree with anything: the contract tests need a model that really classifies
    assert r.accuracy > 0.6 and len(set(np.argmax(r.outputs, 1).tolist())) == 10
    return r


@pytest.mark.parametrize("fmt, precision", CASES, ids=[f"{f}-{p}" for f, p in CASES])
def test_backend_contract(tmp_path, small, data, ref, fmt, precision):
    backend = get_backend(fmt)
    out = tmp_path / backend.artifact_name(small.name, precision)
    art = convert(small, fmt, precision, backend.options_type(), out, calibration=data.calibration,
                  calibration_samples=200)
    # the artifact is complete, hashed and described
    assert art.path == out.resolve() and out.exists()
    assert all(f.exists() for f in art.files) and art.size_bytes == sum(f.stat().st_size for f in art.files)
    assert len(art.sha256) == 64
    assert open_artifact(out).sha256 == art.sha256, "hash must be reproducible from the files alone"
    assert art.inspection["inputs"] and art.inspection["outputs"] and sum(art.inspection["op_counts"].values()) > 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"
    assert art.quantization["weights"].startswith(precision if precision != "int8" else "int8")

    result = verify(art, ref, data.evaluation, Thresholds(), threads=2)
    assert result["status"] == "measured" and result["checks"] == []      # measured: no threshold to check
    m = result["metrics"]
    min_agree, min_sqnr = EXPECT[precision]
    assert m["samples"] == 500
    assert m["agreement"] >= min_agree, m
    assert m["sqnr_db"] >= min_sqnr, m
    assert abs(m["accuracy_drop"]) <= 100 * (1 - min_agree) + 1e-9


def test_int8_tflite_is_fully_integer(tmp_path, small, data):
    from edgeprep.config.formats import TFLiteOptions

    art = convert(small, "tflite", "int8", TFLiteOptions(), tmp_path / "m.tflite", calibration=data.calibration)
    assert art.inspection["inputs"][0]["dtype"] == "int8" and art.inspection["outputs"][0]["dtype"] == "int8"
    assert "DEQUANTIZE" not in art.inspection["op_counts"]
    u8 = convert(small, "tflite", "int8", TFLiteOptions(int8_io="uint8"), tmp_path / "u.tflite",
                 calibration=data.calibration)
    assert u8.inspection["inputs"][0]["dtype"] == "uint8"


@pytest.fixture(scope="module")
def openvino_fp32(small, tmp_path_factory):
    """The fp32 OpenVINO IR of ``small``, for the tests that only read it."""
    from edgeprep.config.formats import OpenVINOOptions

    return convert(small, "openvino", "fp32", OpenVINOOptions(), tmp_path_factory.mktemp("ov") / "m.fp32.xml")


def test_openvino_int8_has_fake_quantize_and_fp32_keeps_fp32_weights(tmp_path, small, data, openvino_fp32):
    from edgeprep.config.formats import OpenVINOOptions

    fp32 = openvino_fp32
    fp16 = convert(small, "openvino", "fp16", OpenVINOOptions(), tmp_path / "m.fp16.xml")
    # 100 samples: where NNCF puts FakeQuantize does not depend on how many samples set their ranges
    int8 = convert(small, "openvino", "int8", OpenVINOOptions(), tmp_path / "m.int8.xml",
                   calibration=data.calibration, calibration_samples=100)
    assert int8.inspection["op_counts"].get("FakeQuantize", 0) >= 3
    assert "FakeQuantize" not in fp32.inspection["op_counts"]
    def weights(a):
        return next(f for f in a.files if f.suffix == ".bin").stat().st_size

    assert weights(fp16) < 0.6 * weights(fp32)  # fp16 weights really are half the size
    assert {p.suffix for p in fp32.files} == {".xml", ".bin"}


def test_openvino_reports_execution_precision(openvino_fp32, data, ref):
    art = openvino_fp32
    result = verify(art, ref, data.evaluation, Thresholds(), threads=2)
    assert result["executed_by"]["execution_precision"] == "float32"
    assert result["executed_by"]["requested_precision"] == "f32"


def test_sequential_model_converts_to_coreml_via_concrete_function(tmp_path):
    m = build_small_cnn(sequential=True)
    m.save(tmp_path / "s.keras")
    h = load_model(tmp_path / "s.keras")
    from edgeprep.config.formats import CoreMLOptions

    art = convert(h, "coreml", "fp16", CoreMLOptions(), tmp_path / "s.mlpackage")
    assert art.inspection["inputs"][0]["shape"] == [1, 28, 28, 1]
    assert "conv" in art.inspection["op_counts"]


def test_coreml_int8_weights_are_compressed(tmp_path, small):
    from edgeprep.config.formats import CoreMLOptions

    art = convert(small, "coreml", "int8", CoreMLOptions(weight_threshold=0), tmp_path / "q.mlpackage")
    ops = art.inspection["op_counts"]
    assert any(k.startswith("constexpr_") for k in ops), ops


def test_failed_conversion_leaves_nothing_behind(tmp_path, small):
    from edgeprep.config.formats import TFLiteOptions
    from edgeprep.data import load_dataset

    x = np.zeros((20, 28, 28, 1), np.float32)
    x[5] = np.nan
    np.savez(tmp_path / "bad.npz", x=x)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(DataError, match="NaN/Inf"):
        convert(small, "tflite", "int8", TFLiteOptions(), out_dir / "m.int8.tflite",
                calibration=load_dataset(tmp_path / "bad.npz"))
    assert list(out_dir.iterdir()) == []


def test_onnx_models_only_convert_to_openvino(tmp_path):
    from test_models import make_onnx

    h = load_model(make_onnx(tmp_path / "m.onnx"))
    with pytest.raises(ConversionError, match="edgeprep.onnx.to_keras"):
        get_backend("tflite").check(h, "fp32")
    from edgeprep.config.formats import OpenVINOOptions

    art = convert(h, "openvino", "fp32", OpenVINOOptions(), tmp_path / "m.xml")
    x = np.random.default_rng(0).random((8, 1, 28, 28)).astype(np.float32)
    from device_bench.runners import open_model

    got = open_model("openvino", str(art.path)).run(x)
    np.testing.assert_allclose(got, h.predict(x), atol=1e-5)


def test_a_size_check_fails_an_artifact_that_cannot_be_executed(tmp_path, small, ref, data):
    from dataclasses import replace

    from edgeprep.config.formats import CoreMLOptions

    executable = convert(small, "coreml", "fp16", CoreMLOptions(), tmp_path / "m.mlpackage")
    # the artifact as a host without any runner for its format describes it
    art = replace(executable, runtime=None, unavailable_reason="no runtime for coreml on this host")
    assert verify(art, ref, data.evaluation, Thresholds(max_size_bytes=art.size_bytes))["status"] == "unmeasured"
    failed = verify(art, ref, data.evaluation, Thresholds(max_size_bytes=art.size_bytes - 1))
    assert failed["status"] == "failed" and failed["checks"][0]["name"] == "max_size_bytes"


def test_a_damaged_model_is_caught_by_verification(tmp_path, trained_small, data, ref):
    """Same architecture, weights perturbed: the artifact converts fine but must fail the agreement check."""
    import keras

    m = keras.models.load_model(trained_small)
    rng = np.random.default_rng(0)
    m.set_weights([w + rng.normal(0, 0.5 * (np.std(w) + 1e-3), w.shape).astype(w.dtype) for w in m.get_weights()])
    m.save(tmp_path / "damaged.keras")
    from edgeprep.config.formats import TFLiteOptions

    art = convert(load_model(tmp_path / "damaged.keras"), "tflite", "fp32", TFLiteOptions(), tmp_path / "d.tflite")
    result = verify(art, ref, data.evaluation, Thresholds(min_agreement=0.99, max_accuracy_drop=1.0))
    assert result["status"] == "failed"
    failed = {c["name"] for c in result["checks"] if not c["passed"]}
    assert "min_agreement" in failed and result["metrics"]["agreement"] < 0.9
