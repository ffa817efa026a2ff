"""ONNX models as input: converted to a Keras graph that every stage and format uses, verified against ONNX Runtime.

Models are made here: Keras models exported with tf2onnx (NHWC, as TensorFlow users get them), the trained small CNN
exported NCHW with its BatchNormalization nodes kept (as a PyTorch export looks; ``onnx_models.export_unfused``),
and graphs written with ``onnx.helper`` (unfused BN, dynamic H/W, an unsupported op). Every toolchain is real.
"""

from __future__ import annotations

import json

import numpy as np
import onnx_models as om
import pytest
from conftest import MANIFEST, require

from edgeprep.data import Preprocess, load_data, load_dataset
from edgeprep.errors import ConversionError, InputError
from edgeprep.models import load_model
from edgeprep.onnx import to_keras


def _tf2onnx_available() -> bool:
    try:
        import tf2onnx  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def evaluation():
    return load_data(MANIFEST).evaluation      # the manifest scales pixels to [0, 1]


@pytest.fixture(scope="module")
def rgb(evaluation):
    return evaluation.with_preprocess(Preprocess(scale=1 / 255, channels=3))


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory, trained_small, evaluation):
    """The trained small CNN (Conv-BN-ReLU, depthwise-BN, residual Add, MaxPool, Dense) as NCHW ONNX with unfused
    BatchNormalization and input [N, 1, H, W]; checked against the Keras model."""
    import keras

    model = keras.models.load_model(trained_small)
    path = om.export_unfused(model, tmp_path_factory.mktemp("onnx") / "small.onnx")
    om.assert_same(model, path, evaluation.arrays(64)[0])
    return path


@pytest.fixture(scope="module")
def bn_onnx(tmp_path_factory):
    return om.bn_graph(tmp_path_factory.mktemp("bn") / "bn.onnx")


def _graph_with_input(dims, first_op="Conv"):
    from onnx import TensorProto, helper

    node = helper.make_node(first_op, ["x", "w"], ["y"], name="first") if first_op == "Conv" else \
        helper.make_node("Transpose", ["x"], ["y"], name="first", perm=[0, 3, 1, 2])
    return helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])


@pytest.mark.parametrize("dims, first, layout", [
    (["N", 3, "H", "W"], "Relu", "NCHW"), (["N", "H", "W", 3], "Relu", "NHWC"), ([1, 1, 28, 28], "Relu", "NCHW"),
    ([1, 28, 28, 1], "Relu", "NHWC"), (["N", "C", "H", "W"], "Relu", "NCHW"), (["N", 3, 32, 3], "Conv", "NCHW"),
    (["N", 32, 32, 3], "Transpose", "NHWC")])
def test_the_onnx_input_layout_is_read_from_the_graph_then_the_dims(dims, first, layout):
    from edgeprep.onnx.layout import plan_input

    graph = _graph_with_input(dims, first if first != "Relu" else "Conv")
    if first == "Relu":      # no graph evidence: the input feeds something else
        graph.node[0].op_type = "Relu"
        del graph.node[0].input[1:]
    plan = plan_input(graph, "NHWC", False, (20, 24, 3 if 3 in dims else 1))
    assert plan.onnx_layout == layout
    dims_nhwc = dict(zip(layout[1:], plan.onnx_shape))
    assert plan.shape == (dims_nhwc["H"], dims_nhwc["W"], dims_nhwc["C"])
    if "H" in dims:          # dynamic: fixed from the data, and the report says so
        assert dict(plan.fixed)["H"].startswith("20 from the data")


def test_a_dynamic_input_without_data_or_resize_is_refused_naming_the_fix():
    from edgeprep.onnx.layout import plan_input

    with pytest.raises(InputError, match=r"height is dynamic \('H'\).*--resize"):
        plan_input(_graph_with_input(["N", 3, "H", "W"]), "NHWC", False, None)
    plan = plan_input(_graph_with_input(["N", 3, "H", "W"]), "NCHW", True, None, input_shape=(3, 40, 30))
    assert plan.shape == (3, 40, 30) and plan.to_onnx is None and "--input-shape" in dict(plan.fixed)["W"]


@pytest.mark.parametrize("arch", sorted(om.ARCHITECTURES))
def test_tf2onnx_exports_convert_to_the_keras_model_they_came_from(arch, evaluation, tmp_path):
    require(_tf2onnx_available(), "tf2onnx (pip install -e '.[test]')")
    model = om.ARCHITECTURES[arch]()
    handle = to_keras(load_model(om.tf2onnx_export(model, tmp_path / f"{arch}.onnx")), data=evaluation)
    x, _ = evaluation.arrays(128)
    assert handle.kind == "keras" and handle.input_shape == (28, 28, 1)
    assert handle.onnx.plan.onnx_layout == "NHWC" and handle.onnx.plan.to_onnx is None
    assert handle.onnx.agreement.passed and handle.onnx.agreement.max_rel < 1e-5
    np.testing.assert_allclose(handle.predict(x), np.asarray(model(x)), atol=2e-6)     # ONNX Runtime
    np.testing.assert_allclose(np.asarray(handle.obj(x)), np.asarray(model(x)), atol=2e-6)   # the Keras graph
    assert not [layer for layer in handle.obj.layers if type(layer).__name__ == "Permute"]   # transposes absorbed


def test_unfused_batchnorm_becomes_keras_layers_folded_and_recalibrated_into_the_onnx_reference(bn_onnx, rgb):
    from edgeprep.config.calibrate import CalibrateConfig
    from edgeprep.data import DataSpec
    from edgeprep.stages.prepare import prepare

    handle = to_keras(load_model(bn_onnx), data=rgb)
    plan = handle.onnx.plan
    assert (plan.onnx_layout, plan.layout, plan.shape) == ("NCHW", "NHWC", (28, 28, 3))
    assert [k for k, _ in plan.fixed] == ["H", "W"]
    assert [type(la).__name__ for la in handle.obj.layers].count("BatchNormalization") == 2
    x, _ = rgb.arrays(200)
    before = handle.predict(x)
    prepared = prepare(handle, CalibrateConfig(enabled=True, samples=500), DataSpec(rgb, rgb))
    assert prepared.sections["fold"]["status"] == "folded" and len(prepared.sections["fold"]["folded"]) == 2
    assert prepared.sections["calibration"]["layers"]            # BN telemetry, per layer
    ref = prepared.reference
    assert ref.onnx is not handle.onnx and "re-estimated" in ref.onnx.statistics
    after = ref.predict(x)                                         # ONNX Runtime with the new statistics
    assert np.abs(after - before).max() > 1e-3                     # the statistics changed the function
    np.testing.assert_allclose(after, np.asarray(ref.obj(x)), atol=1e-5)             # = recalibrated Keras
    np.testing.assert_allclose(after, np.asarray(prepared.to_convert.obj(x)), atol=1e-5)   # = folded Keras
    assert load_model(bn_onnx).predict(np.transpose(x, (0, 3, 1, 2))) == pytest.approx(before, abs=1e-6)


def test_a_keras_graph_that_disagrees_with_onnx_runtime_is_refused(bn_onnx, rgb):
    from edgeprep.onnx import check

    handle = to_keras(load_model(bn_onnx), data=rgb)
    conv = handle.obj.get_layer("conv2")
    kernel, *rest = conv.get_weights()
    conv.set_weights([kernel * 1.01, *rest])
    with pytest.raises(ConversionError, match="disagrees with ONNX Runtime"):
        check(handle.obj, handle.onnx, rgb, handle.onnx.plan)


def _target(path, formats, precisions, calibrate=False):
    path.write_text(f"""name = "onnx-test"
description = "ONNX input, no benchmark"
formats = {json.dumps(formats)}
precisions = {json.dumps(precisions)}
threads = 2
[calibrate]
enabled = {str(calibrate).lower()}
samples = 300
[quantize]
calibration_samples = 200
[verify]
samples = 400
[gates]
max_accuracy_drop = 1.0
min_agreement = 0.99
[gates.int8]
max_accuracy_drop = 3.0
min_agreement = 0.95
""")
    return path


@pytest.mark.slow
def test_every_format_and_precision_is_verified_against_onnx_runtime(cli, small_onnx, tmp_path):
    target = _target(tmp_path / "all.toml", ["tflite", "openvino", "coreml"], ["fp32", "fp16", "int8"],
                     calibrate=True)
    r = cli("run", small_onnx, "--target", target, "--data", MANIFEST, "-o", tmp_path / "run")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    model = report["model"]
    assert model["kind"] == "onnx" and model["onnx"]["onnx_input"]["layout"] == "NCHW"
    assert model["onnx"]["artifact_input"] == {**model["onnx"]["artifact_input"], "layout": "NHWC",
                                               "shape": [1, 28, 28, 1]}
    assert set(model["onnx"]["dynamic_dims_fixed"]) == {"H", "W"}
    assert report["fold"]["status"] == "folded" and report["calibration"]["layers"]
    assert report["reference"]["accuracy"] > 0.6                  # the trained model, run by ONNX Runtime
    figures = {(a["format"], a["precision"]): a["metrics"] for a in report["artifacts"]}
    assert len(figures) == 9 and all(a["verification"]["status"] == "verified" for a in report["artifacts"])
    for (fmt, precision), m in figures.items():
        if precision == "fp32":
            assert m["agreement"] == 1.0 and m["sqnr_db"] >= 100, (fmt, m)
        elif precision == "fp16":
            assert m["agreement"] >= 0.99 and m["sqnr_db"] >= 60, (fmt, m)
        else:
            assert m["agreement"] >= 0.95 and m["accuracy_drop"] <= 3.0, (fmt, m)
    for a in report["artifacts"]:
        if a["format"] == "tflite":
            assert a["inspection"]["inputs"][0]["shape"][1:] == [28, 28, 1]


def test_an_unsupported_op_is_exit_2_one_line_naming_it_and_nothing_is_written(cli, tmp_path):
    bad = om.unsupported_graph(tmp_path / "bad.onnx")
    out = tmp_path / "out"
    out.mkdir()
    r = cli("convert", bad, "--to", "tflite", "--precision", "fp32", "-o", out / "bad.tflite")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "Einsum" in lines[0] and "'mix/einsum'" in lines[0] and "supported:" in lines[0]
    assert list(out.iterdir()) == []
    r = cli("run", bad, "--target", "litert-cpu", "--data", MANIFEST, "-o", tmp_path / "run")
    assert r.returncode == 2 and "Einsum" in r.stderr and not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory, eval_npz):
    """RGB PNGs (Fashion-MNIST, grey copied to 3 channels), one folder per class: what a camera dataset looks like."""
    from PIL import Image

    root = tmp_path_factory.mktemp("pngs")
    for cls in range(3):
        (root / f"class_{cls}").mkdir()
        for i in np.flatnonzero(eval_npz["y"] == cls)[:12]:
            Image.fromarray(np.repeat(eval_npz["x"][i].reshape(28, 28, 1), 3, axis=-1)).save(root / f"class_{cls}" /
                                                                                     f"{i}.png")
    return root


def test_an_nchw_model_runs_on_an_image_folder_without_layout_flags(cli, bn_onnx, png_folder, tmp_path):
    target = _target(tmp_path / "t.toml", ["tflite"], ["fp32"])
    r = cli("run", bn_onnx, "--target", target, "--data", png_folder, "--scale", 1 / 255, "-o", tmp_path / "run")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    onnx = report["model"]["onnx"]
    assert onnx["onnx_input"]["dims"] == ["batch", 3, "height", "width"] and onnx["onnx_input"]["layout"] == "NCHW"
    assert onnx["artifact_input"]["layout"] == "NHWC" and onnx["artifact_input"]["shape"] == [1, 28, 28, 3]
    (art,) = report["artifacts"]
    assert art["metrics"]["samples"] == 36 and art["metrics"]["sqnr_db"] >= 100 and art["metrics"]["agreement"] == 1


def test_layout_nchw_gives_an_nchw_artifact_that_matches_onnx_runtime(cli, bn_onnx, png_folder, tmp_path):
    from device_bench.runners import open_model

    out = tmp_path / "m.tflite"
    r = cli("convert", bn_onnx, "--to", "tflite", "--precision", "fp32", "--data", png_folder, "--layout", "NCHW",
            "-o", out)
    assert r.returncode == 0, r.stderr
    x = load_dataset(png_folder, Preprocess(scale=1 / 255, layout="NCHW")).arrays()[0]
    assert x.shape[1:] == (3, 28, 28)
    got = open_model("litert", str(out)).run(x)
    want = load_model(bn_onnx).predict(x)
    err = np.abs(got - want).max()
    assert err < 1e-5 and np.array_equal(got.argmax(1), want.argmax(1))


def test_dynamic_dims_without_data_take_the_resize_or_are_refused(cli, bn_onnx, tmp_path):
    r = cli("convert", bn_onnx, "--to", "tflite", "--precision", "fp32", "-o", tmp_path / "a.tflite")
    assert r.returncode == 2 and "dynamic" in r.stderr and "--resize" in r.stderr and not list(tmp_path.glob("a*"))
    r = cli("convert", bn_onnx, "--to", "coreml", "--precision", "fp16", "--resize", "32,40", "-o",
            tmp_path / "b.mlpackage")
    assert r.returncode == 0, r.stderr
    from edgeprep.stages.convert import open_artifact

    assert open_artifact(tmp_path / "b.mlpackage").inspection["inputs"][0]["shape"] == [1, 32, 40, 3]


def test_pytorch_export_patterns_convert_exactly(evaluation, tmp_path):
    handle = to_keras(load_model(om.torch_style_graph(tmp_path / "t.onnx")), data=evaluation)
    x, _ = evaluation.arrays(256)
    np.testing.assert_allclose(np.asarray(handle.obj(x)), handle.predict(x), atol=2e-5, rtol=1e-4)
    kinds = [type(layer).__name__ for layer in handle.obj.layers]
    assert "DepthwiseConv2D" in kinds and "Concatenate" in kinds
    # the Reshape after [N,16,14,14] keeps ONNX's channels-first element order: one Permute before the flatten
    assert kinds.count("Permute") == 1
    assert dict(handle.onnx.ops)["Reshape"] == 2 and handle.onnx.folded_nodes == 3


def test_a_mobilenet_v3_style_export_keeps_its_batchnorm_and_folds_the_hard_sigmoid_into_the_conv(tmp_path, rgb):
    model = om.mobilenet_v3_style()
    path = om.export_unfused(model, tmp_path / "m.onnx")
    handle = to_keras(load_model(path), data=rgb)
    kinds = [type(layer).__name__ for layer in handle.obj.layers]
    assert kinds.count("BatchNormalization") == 11 == len(handle.onnx.bn)
    # SE gate conv -> Mul(1/6) -> Add(0.5): the affine goes into the conv (NNCF's bias correction refuses a Conv
    # followed by a scalar Add), so no Rescaling is left
    assert "Rescaling" not in kinds
    x, _ = rgb.arrays(64)
    np.testing.assert_allclose(np.asarray(handle.obj(x)), np.asarray(model(x)), atol=1e-5)


def test_every_supported_op_is_listed_in_the_convert_help():
    from edgeprep.commands.convert import convert
    from edgeprep.onnx import supported_ops

    text = " ".join(convert.help.split())
    assert [op for op in supported_ops() if op not in text] == []


def test_a_named_profile_quantizes_an_onnx_model_with_edgeprep_ptq_as_it_does_the_keras_model(cli, trained_small,
                                                                                              small_onnx, tmp_path):
    """``edgeprep quantize model.onnx`` with the shipped ``litert-cpu`` profile (edgeprep's own PTQ engine: CLE, MSE
    ranges, AdaRound, bias correction) gives the int8 artifact the same model gives as ``.keras``: verified against
    ONNX Runtime on the original graph, SQNR within 0.2 dB and agreement within 1 pt of the Keras route's (measured
identical: 32.94 dB, 0.989 on both)."""
    figures = {}
    for name, model in (("keras", trained_small), ("onnx", small_onnx)):
        r = cli("quantize", model, "--target", "litert-cpu", "--data", MANIFEST, "--calib-samples", "200",
                "-o", tmp_path / name)
        assert r.returncode == 0, r.stdout + r.stderr
        report = json.loads((tmp_path / name / "report.json").read_text())
        (art,) = report["artifacts"]
        assert art["format"] == "tflite" and art["precision"] == "int8"
        assert art["verification"]["status"] == "verified", art["verification"]
        assert art["quantization"]["algorithms"].startswith("edgeprep PTQ: "), art["quantization"]
        figures[name] = (report["model"]["kind"], art["metrics"])
    assert figures["onnx"][0] == "onnx" and figures["keras"][0] != "onnx"
    keras_m, onnx_m = figures["keras"][1], figures["onnx"][1]
    assert onnx_m["sqnr_db"] >= 25 and abs(onnx_m["sqnr_db"] - keras_m["sqnr_db"]) <= 0.2, (keras_m, onnx_m)
    assert abs(onnx_m["agreement"] - keras_m["agreement"]) <= 0.01 and onnx_m["agreement"] >= 0.97, (keras_m, onnx_m)
