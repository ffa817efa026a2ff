"""Export integrity on real artifacts of every format, and the BN stages inside `edgeprep run`."""

from __future__ import annotations

import numpy as np
import pytest
from test_calibrate import shifted  # noqa: F401  (fixture)

from edgeprep.stages.convert import open_artifact
from edgeprep.stages.integrity import ExportIntegrity, read_graph, scan, statistics_check


def _keras_bn_after_relu():
    import keras
    from bn_models import randomize_bn
    from keras import layers
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inp)
    x = layers.ReLU()(x)
    x = layers.BatchNormalization()(x)          # kept: after an activation
    out = layers.Dense(2)(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    randomize_bn(model)
    return model


def test_tflite_bn_left_after_a_plain_conv_is_found(tmp_path):
    import flatbuffers
    import tensorflow as tf
    from ai_edge_litert import schema_py_generated as schema

    path = tmp_path / "kept.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(_keras_bn_after_relu()).convert())
    kept = scan(read_graph("tflite", path))
    assert kept.affine_ops == 1 and kept.foldable == ()             # CONV_2D+RELU -> MUL: not foldable
    # The same file with the conv's fused ReLU removed: now the MUL/ADD pair is a BN a converter should fold.
    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    for op in model.subgraphs[0].operators:
        if getattr(op.builtinOptions, "fusedActivationFunction", None) == schema.ActivationFunctionType.RELU:
            op.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.NONE
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    bad = tmp_path / "unfolded.fp32.tflite"
    bad.write_bytes(bytes(builder.Output()))
    check = ExportIntegrity()(open_artifact(bad), None, None)[0]     # a real, loadable artifact
    assert check["name"] == "no_foldable_bn_ops" and check["value"] == 1 and not check["passed"]
    assert "MUL" in check["detail"]


def test_openvino_multiply_add_after_convolution_is_found(tmp_path):
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)

    def build(relu_first: bool):
        x = ops.parameter([1, 3, 8, 8], np.float32, name="x")
        y = ops.convolution(x, ops.constant(rng.normal(0, 1, (4, 3, 3, 3)).astype(np.float32)), [1, 1], [1, 1],
                            [1, 1], [1, 1])
        if relu_first:
            y = ops.relu(y)
        y = ops.add(ops.multiply(y, ops.constant(rng.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32))),
                    ops.constant(rng.normal(0, 1, (1, 4, 1, 1)).astype(np.float32)))
        return ov.Model([ops.relu(y) if not relu_first else y], [x], "m")

    for relu_first, foldable in ((False, 1), (True, 0)):
        path = tmp_path / f"m{int(relu_first)}.fp32.xml"
        ov.save_model(build(relu_first), str(path), compress_to_fp16=False)
        result = scan(read_graph("openvino", path))
        assert result.affine_ops == 1 and len(result.foldable) == foldable, result


def test_coreml_batch_norm_and_mul_add_after_conv_are_found(tmp_path):
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (4, 3, 3, 3)).astype(np.float32)
    v = rng.uniform(0.5, 2, 4).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 8, 8))])
    def prog(x):
        a = mb.batch_norm(x=mb.conv(x=x, weight=w), mean=v, variance=v, epsilon=1e-3)
        b = mb.add(x=mb.mul(x=mb.conv(x=x, weight=w), y=v.reshape(1, 4, 1, 1)), y=v.reshape(1, 4, 1, 1))
        c = mb.mul(x=mb.relu(x=mb.conv(x=x, weight=w)), y=v.reshape(1, 4, 1, 1))   # after an activation: kept
        return mb.add(x=mb.add(x=a, y=b), y=c)

    model = ct.convert(prog, convert_to="mlprogram", pass_pipeline=ct.PassPipeline.EMPTY)
    path = tmp_path / "m.fp32.mlpackage"
    model.save(str(path))
    result = scan(read_graph("coreml", path))
    assert result.bn_ops == 1 and result.affine_ops == 2 and len(result.foldable) == 2, result


def test_statistics_check_tells_kept_from_lost_statistics():
    rng = np.random.default_rng(0)
    recal = rng.uniform(0, 1, (200, 10))
    stale = recal + rng.normal(0, 0.05, recal.shape)
    kept = statistics_check(recal + rng.normal(0, 0.005, recal.shape), recal, stale)
    lost = statistics_check(stale + rng.normal(0, 0.005, recal.shape), recal, stale)
    assert kept["passed"] and kept["value"] < 0.2
    assert not lost["passed"] and lost["value"] > 5
    assert statistics_check(recal + rng.normal(0, 0.5, recal.shape), recal, stale) is None   # noise >> change


def test_fused_batch_norm_in_a_savedmodel_is_folded_by_the_converters(tmp_path):
    """A TF graph with FusedBatchNormV3 (a "fused" BN): no Keras layers to fold, so the stages say so and the
    integrity check confirms each converter folded it."""
    import tensorflow as tf

    from edgeprep.backends import get_backend
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    rng = np.random.default_rng(0)
    w = tf.constant(rng.normal(0, 1, (3, 3, 3, 4)).astype(np.float32))
    stats = [tf.constant(rng.uniform(0.5, 2, 4).astype(np.float32)) for _ in range(4)]

    class Net(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
        def __call__(self, x):
            y = tf.nn.conv2d(x, w, 1, "SAME")
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(y, *stats, is_training=False)
            return tf.reduce_mean(tf.nn.relu(y), axis=[1, 2])

    net = Net()
    tf.saved_model.save(net, str(tmp_path / "sm"), signatures={"serving_default": net.__call__})
    ops = {op.type for f in [net.__call__.get_concrete_function()] for op in f.graph.get_operations()}
    assert "FusedBatchNormV3" in ops
    handle = load_model(tmp_path / "sm")
    for fmt in ("tflite", "openvino"):
        backend = get_backend(fmt)
        art = convert(handle, fmt, "fp32", backend.options_type(), tmp_path / backend.artifact_name("sm", "fp32"))
        check = ExportIntegrity()(art, None, None)[0]
        assert check["passed"], check


@pytest.mark.slow
def test_run_calibrates_folds_and_checks_every_artifact(trained_small, shifted, tmp_path):  # noqa: F811
    from edgeprep.pipelines.run import run
    from edgeprep.targets import parse_target

    target = parse_target('name = "bn"\ndescription = "BN stages"\nformats = ["tflite", "openvino"]\n'
                          'precisions = ["fp32", "int8"]\n[calibrate]\nenabled = true\n[quantize]\n'
                          'calibration_samples = 200\n[verify]\nsamples = 1000\n', "bn.toml")
    result = run(trained_small, target, shifted, tmp_path / "run")
    report = result.report
    cal, fold = report["calibration"], report["fold"]
    assert cal["status"] == "recalibrated" and cal["accuracy"]["after"] > cal["accuracy"]["before"] + 0.05
    assert abs(report["reference"]["accuracy"] - cal["accuracy"]["after"]) < 1e-9   # verify uses the new model
    assert fold["status"] == "folded" and len(fold["folded"]) == 2 and fold["equivalence"]["passed"]
    assert [s["name"] for s in report["stages"]][:2] == ["calibrate", "fold"]
    for a in report["artifacts"]:
        checks = {c["name"]: c for c in a["verification"]["checks"]}
        assert checks["no_foldable_bn_ops"]["passed"], (a["format"], a["precision"], checks)
        if a["precision"] == "fp32":
            assert checks["bn_statistics_kept"]["passed"] and checks["bn_statistics_kept"]["value"] < 0.01
        assert a["verification"]["status"] == "measured"     # integrity checks passed; the profile sets no gates
    assert report["summary"]["status"] == "measured"


@pytest.mark.slow
def test_mixed_float16_model_to_an_fp16_target_keeps_bn_in_float32(tmp_path):
    from bn_models import conv_variants, randomize_bn, under_mixed_float16

    from edgeprep.pipelines.run import run
    from edgeprep.targets import parse_target

    model = under_mixed_float16(conv_variants)
    randomize_bn(model)
    model.save(tmp_path / "mixed.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.uniform(0, 1, (160, 12, 12, 3)).astype("float32"))
    target = parse_target('name = "fp16"\ndescription = "fp16 weights"\nformats = ["tflite"]\n'
                          'precisions = ["fp16"]\n[calibrate]\nenabled = true\n', "fp16.toml")
    report = run(tmp_path / "mixed.keras", target, tmp_path / "data.npz", tmp_path / "run").report
    assert report["calibration"]["dtype_policy"] == "mixed_float16"
    assert all(t["non_finite"]["total"] == 0 and t["applied"] for t in report["calibration"]["layers"])
    # fold is handed the recalibrated fp32 copy
    assert report["fold"]["dtype_policy"] == "float32" and report["fold"]["equivalence"]["max_rel_error"] < 1e-5
    art = report["artifacts"][0]
    # fp16 weights against the fp32 reference (an untrained model: near-ties may flip a sample's top-1)
    assert art["metrics"]["sqnr_db"] > 40 and art["metrics"]["agreement"] >= 0.97
    assert all(c["passed"] for c in art["verification"]["checks"])
