"""BatchNorm folding: the arithmetic, every model structure, equivalence on real data, refusal and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bn_models import conv_variants, nested, no_bn, randomize_bn, sequential_conv1d, under_mixed_float16, unfoldable
from conftest import EXAMPLE_MODEL, MANIFEST, run_cli

from edgeprep.bn.maths import bn_affine, fold_bn_into_next, fold_bn_params
from edgeprep.report import validate
from edgeprep.stages.fold import FoldConfig, FoldRefused, fold_bn


def _bn(rng, n):
    return rng.uniform(0.5, 2, n), rng.normal(0, 1, n), rng.normal(0, 1, n), rng.uniform(0.1, 3, n), 1e-3


def test_fold_arithmetic_matches_dense_then_bn_and_bn_then_dense():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (50, 6))
    w, b = rng.normal(0, 1, (6, 4)), rng.normal(0, 1, 4)
    gamma, beta, mean, var, eps = _bn(rng, 4)
    expected = gamma * ((x @ w + b) - mean) / np.sqrt(var + eps) + beta
    k, c = fold_bn_params(w, b, gamma, beta, mean, var, eps, -1)
    assert np.max(np.abs(x @ k + c - expected)) < 1e-5
    k0, c0 = fold_bn_params(w, None, None, None, mean, var, eps, -1)      # no bias, center and scale off
    assert np.max(np.abs(x @ k0 + c0 - (x @ w - mean) / np.sqrt(var + eps))) < 1e-5
    g2, b2, m2, v2, _ = _bn(rng, 6)
    s, t = bn_affine(g2, b2, m2, v2, eps)
    k2, c2 = fold_bn_into_next(w, b, g2, b2, m2, v2, eps, in_axis=-2, out_axis=-1)
    assert np.max(np.abs(x @ k2 + c2 - ((x * s + t) @ w + b))) < 1e-5
    assert k.dtype == np.float32 and c.dtype == np.float32


def _outputs(model, x):
    return np.asarray(model(x, training=False), np.float64)


def _bn_count(model):
    import keras

    from edgeprep.bn.graph import walk
    return sum(isinstance(layer, keras.layers.BatchNormalization) for _, layer in walk(model))


@pytest.mark.parametrize("build, folded, kept", [
    (conv_variants, {"bn_conv": "conv_nobias", "bn_dw_nocenter": "dw", "bn_sep_noscale": "sep",
                     "bn_chained": "sep", "bn_fc_sync": "fc"}, {}),
    (unfoldable, {"bn_after_relu_into_next": "c2_valid"},
     {"bn_after_relu_padded_next": "zero-pads", "bn_multi_consumer": "multiple consumers",
      "bn_after_shared_conv": "is shared", "bn_shared": "BN layer is shared"}),
    (nested, {"inner_block/inner_bn": "inner_block/inner_conv", "inner_seq/seq_bn": "inner_seq/seq_fc"},
     {"outer_bn_after_submodel": "nested model"}),
    (sequential_conv1d, {"bn_c1d": "c1d"}, {"bn_axis1": "normalizes axis 1"}),
])
def test_every_structure_folds_or_is_kept_with_its_reason(build, folded, kept):
    model = build()
    randomize_bn(model)
    result = fold_bn(model)
    rep = result.report
    assert {f.bn: f.into for f in rep.folded} == folded
    assert set(k.bn for k in rep.kept) == set(kept)
    for k in rep.kept:
        assert kept[k.bn] in k.reason, k.reason
    assert rep.status == "folded" and rep.equivalence.passed
    # Independently of the stage's own check: fresh inputs, outputs within the fp32 bound, BNs gone.
    shape = tuple(model.inputs[0].shape[1:])
    x = np.random.default_rng(5).normal(0, 1, (32, *shape)).astype("float32")
    ref = _outputs(model, x)
    assert np.max(np.abs(_outputs(result.model, x) - ref)) / np.max(np.abs(ref)) <= 1e-4
    assert _bn_count(result.model) == len(kept)
    assert _bn_count(model) == len(folded) + len(kept)       # the input model is untouched


def test_activation_after_the_bn_is_kept():
    model = conv_variants()
    randomize_bn(model)
    names = [layer.name for layer in fold_bn(model).model.layers]
    assert names.index("conv_nobias") + 1 == names.index("relu1")
    assert "relu2" in names and "relu4" in names


def test_example_model_folds_every_bn_within_fp32_precision(calib_npz):
    from edgeprep.data import load_data
    from edgeprep.models import load_model

    model = load_model(EXAMPLE_MODEL)
    data = load_data(MANIFEST)
    result = fold_bn(model.obj, data=data.calibration)
    rep = result.report
    assert rep.status == "folded" and len(rep.folded) == rep.bn_layers == 13 and not rep.kept
    assert rep.equivalence.samples == 256 and rep.equivalence.max_rel_error < 1e-5
    assert rep.parameters_after < rep.parameters_before
    x = calib_npz["x"][:200].astype("float32") / 255.0
    a, b = _outputs(model.obj, x), _outputs(result.model, x)
    assert np.array_equal(a.argmax(1), b.argmax(1))
    validate_section("fold", rep.to_dict())


def validate_section(name, section):
    from edgeprep.report import build_report

    validate(build_report(command=name, model={"path": "m.keras", "kind": "keras", "sha256": "0" * 64,
                                               "size_bytes": 1, "input": {}, "output": {}},
                          artifacts=[], extra={name: section}))


def test_fold_is_refused_above_the_error_limit():
    model = conv_variants()
    randomize_bn(model)
    result = fold_bn(model, FoldConfig(max_rel_error=1e-12))
    assert result.report.status == "refused"
    assert "fold refused" in result.report.message and "1e-12" in result.report.message
    assert _bn_count(result.model) == 5                  # the unfolded model comes back
    with pytest.raises(FoldRefused) as info:
        result.raise_if_refused()
    assert info.value.exit_code == 1


def test_no_bn_means_nothing_to_fold():
    result = fold_bn(no_bn())
    assert result.report.status == "nothing to fold" and result.report.equivalence is None


def test_mixed_float16_model_is_folded_in_float32():
    model = under_mixed_float16(conv_variants)
    randomize_bn(model)
    result = fold_bn(model)
    assert result.report.dtype_policy == "mixed_float16"
    assert result.report.equivalence.max_rel_error < 1e-5     # against the fp32 copy: the fold adds no error
    for layer in result.model.layers:
        assert layer.dtype_policy.name == "float32"
        for w in layer.weights:
            assert w.dtype == "float32"


def test_bn_commands_have_help():
    for cmd in ("calibrate", "fold"):
        proc = run_cli(cmd, "--help")
        assert proc.returncode == 0 and "Usage:" in proc.stdout and "BatchNorm" in proc.stdout, cmd


@pytest.mark.slow
def test_fold_cli_writes_model_and_report_or_refuses(cli, tmp_path):
    model = conv_variants()
    randomize_bn(model)
    model.save(tmp_path / "m.keras")
    no_bn().save(tmp_path / "plain.keras")
    proc = cli("fold", tmp_path / "m.keras", "--out", tmp_path / "f.keras")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "5 of 5 folded" in proc.stdout and "random inputs" in proc.stdout
    report = json.loads((tmp_path / "f.report.json").read_text())
    validate(report)
    assert report["command"] == "fold" and report["fold"]["equivalence"]["passed"]
    proc = cli("fold", tmp_path / "m.keras", "--out", tmp_path / "g.keras", "--max-rel-error", "1e-12")
    assert proc.returncode == 1 and "fold refused" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "g.keras").exists()
    proc = cli("fold", tmp_path / "plain.keras", "--out", tmp_path / "p.keras")
    assert proc.returncode == 0 and "nothing to fold" in proc.stdout
    assert not (tmp_path / "p.keras").exists()
