"""Model loading: .keras, legacy .h5, SavedModel directories and .onnx, and one clear error for bad files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_small_cnn

from edgeprep.errors import InputError, ModelError
from edgeprep.models import load_model


def make_onnx(path, seed: int = 0):
    """A real NCHW ONNX classifier (Conv-Relu-GlobalAveragePool-Gemm-Softmax) built with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.3, (8, 1, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (8,)).astype(np.float32)
    fw = rng.normal(0, 0.5, (8, 10)).astype(np.float32)
    fb = np.zeros(10, np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fw, "fw"), (fb, "fb"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_keras_h5_and_savedmodel_give_the_same_outputs(tmp_path):
    model = build_small_cnn(seed=3)
    x = np.random.default_rng(0).random((5, 28, 28, 1)).astype(np.float32)
    want = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")
    model.export(str(tmp_path / "sm"), verbose=False)
    for path, kind in ((tmp_path / "m.keras", "keras"), (tmp_path / "m.h5", "keras"), (tmp_path / "sm", "savedmodel")):
        h = load_model(path)
        assert h.kind == kind and h.input_shape == (28, 28, 1) and h.output_shape == (10,)
        np.testing.assert_allclose(h.predict(x), want, atol=1e-5)
        assert len(h.sha256) == 64 and h.size_bytes > 0


def test_sequential_models_load(tmp_path):
    build_small_cnn(sequential=True).save(tmp_path / "s.keras")
    h = load_model(tmp_path / "s.keras")
    assert h.input_shape == (28, 28, 1)


def test_onnx_model_loads_with_onnxruntime_reference(tmp_path):
    h = load_model(make_onnx(tmp_path / "m.onnx"))
    assert h.kind == "onnx" and h.input_shape == (1, 28, 28) and h.output_shape == (10,)
    out = h.predict(np.random.default_rng(1).random((3, 1, 28, 28)).astype(np.float32))
    assert out.shape == (3, 10) and np.allclose(out.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("name, content, error, fragment", [
    ("missing.keras", None, InputError, "model not found"),
    ("m.pt", b"x", InputError, "unsupported model format '.pt'"),
    ("m.keras", b"not a zip", ModelError, "not a valid .keras"),
    ("m.onnx", b"\x00garbage", ModelError, "cannot load the ONNX"),
    ("d", "dir", InputError, "not a SavedModel"),
])
def test_bad_model_files(tmp_path, name, content, error, fragment):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(error) as err:
        load_model(path)
    assert fragment in str(err.value)


def test_truncated_keras_zip_is_a_model_error(tmp_path):
    build_small_cnn().save(tmp_path / "m.keras")
    data = (tmp_path / "m.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="cut.keras"):
        load_model(tmp_path / "cut.keras")


def test_multi_input_models_are_refused(tmp_path):
    import keras

    a, b = keras.Input((4,)), keras.Input((4,))
    keras.Model([a, b], keras.layers.Add()([a, b])).save(tmp_path / "two.keras")
    with pytest.raises(ModelError, match="2 inputs"):
        load_model(tmp_path / "two.keras")
