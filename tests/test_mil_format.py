"""Reading .mlpackage files without coremltools: the spec, the weight blobs, every weight-compression scheme
coremltools.optimize emits (compared value for value with coremltools' own decompression), fp16 rounding, and
clear errors for packages the executor cannot read or ops it does not implement."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from mil_programs import coremltools_constants, save_program

from device_bench.mil import Program, SpecError, UnsupportedOp
from device_bench.mil.blob import unpack_bits
from device_bench.mil.dtypes import round_fp16

RNG = np.random.default_rng(0)
W = RNG.standard_normal((64, 96)).astype(np.float32)
WC = RNG.standard_normal((32, 16, 3, 3)).astype(np.float32)
X = {"x": RNG.standard_normal((2, 96)).astype(np.float32), "img": RNG.standard_normal((1, 16, 6, 6)).astype(np.float32)}


def _body(x, img):
    from coremltools.converters.mil import Builder as mb

    return {"y": mb.linear(x=x, weight=W), "z": mb.conv(x=img, weight=WC, pad_type="same")}


def _compressions():
    import coremltools.optimize as cto

    c = cto.coreml

    def cfg(op):
        return c.OptimizationConfig(op)

    def prune(m):
        return c.prune_weights(m, cfg(c.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=0)))

    return {  # name: (deployment target, compression steps, constexpr ops it must produce)
        "int8_symmetric": ("iOS16", [lambda m: c.linear_quantize_weights(m, cfg(c.OpLinearQuantizerConfig(
            mode="linear_symmetric", weight_threshold=0)))], {"constexpr_affine_dequantize"}),
        "uint8_zero_point": ("iOS16", [lambda m: c.linear_quantize_weights(m, cfg(c.OpLinearQuantizerConfig(
            mode="linear", dtype="uint8", weight_threshold=0)))], {"constexpr_affine_dequantize"}),
        "palettized_6bit": ("iOS16", [lambda m: c.palettize_weights(m, cfg(c.OpPalettizerConfig(
            nbits=6, mode="kmeans", weight_threshold=0)))], {"constexpr_lut_to_dense"}),
        "palettized_2bit_uniform": ("iOS16", [lambda m: c.palettize_weights(m, cfg(c.OpPalettizerConfig(
            nbits=2, mode="uniform", weight_threshold=0)))], {"constexpr_lut_to_dense"}),
        "sparse": ("iOS16", [prune], {"constexpr_sparse_to_dense"}),
        "int4_blockwise": ("iOS18", [lambda m: c.linear_quantize_weights(m, cfg(c.OpLinearQuantizerConfig(
            mode="linear", dtype="int4", granularity="per_block", block_size=16, weight_threshold=0)))],
            {"constexpr_blockwise_shift_scale"}),
        "palettized_4bit_grouped": ("iOS18", [lambda m: c.palettize_weights(m, cfg(c.OpPalettizerConfig(
            nbits=4, mode="kmeans", granularity="per_grouped_channel", group_size=16, weight_threshold=0)))],
            {"constexpr_lut_to_dense"}),
        "palettized_vector": ("iOS18", [lambda m: c.palettize_weights(m, cfg(c.OpPalettizerConfig(
            nbits=3, mode="kmeans", cluster_dim=2, weight_threshold=0)))], {"constexpr_lut_to_dense"}),
        "sparse_ios18": ("iOS18", [prune], {"constexpr_sparse_to_dense"}),
        "sparse_palettized": ("iOS18", [prune, lambda m: c.palettize_weights(m, cfg(c.OpPalettizerConfig(
            nbits=4, mode="kmeans", weight_threshold=0)), joint_compression=True)],
            {"constexpr_lut_to_sparse", "constexpr_sparse_to_dense"}),
        "sparse_int8": ("iOS18", [prune, lambda m: c.linear_quantize_weights(m, cfg(c.OpLinearQuantizerConfig(
            mode="linear_symmetric", weight_threshold=0)), joint_compression=True)],
            {"constexpr_sparse_blockwise_shift_scale", "constexpr_sparse_to_dense"}),
    }


COMPRESSIONS = ["int8_symmetric", "uint8_zero_point", "palettized_6bit", "palettized_2bit_uniform", "sparse",
                "int4_blockwise", "palettized_4bit_grouped", "palettized_vector", "sparse_ios18",
                "sparse_palettized", "sparse_int8"]


@pytest.mark.parametrize("name", COMPRESSIONS)
def test_decompression_equals_coremltools_and_the_program_computes_with_it(tmp_path, name):
    import coremltools as ct

    opset, steps, ops = _compressions()[name]
    path = save_program({k: v.shape for k, v in X.items()}, _body, tmp_path / "m.mlpackage", "fp16", opset)
    model = ct.models.MLModel(str(path), skip_model_load=True)
    for step in steps:
        model = step(model)
    model.save(str(path))
    prog = Program(path)
    assert ops <= set(prog.op_counts), prog.op_counts
    theirs = coremltools_constants(path)
    produced = [n for op in prog.spec.ops if op.type.startswith("constexpr_") for n, _ in op.outputs]
    assert produced and set(produced) <= set(theirs) & set(prog.consts)
    for var in set(theirs) & set(prog.consts):                  # every constant, decompressed weights included
        if isinstance(theirs[var], np.ndarray) and theirs[var].dtype.kind in "fiub":
            np.testing.assert_array_equal(np.asarray(prog.consts[var], np.float64),
                                          np.asarray(theirs[var], np.float64), err_msg=var)
    # the decompressed weights are what the ops compute with
    dense = {v.shape: np.asarray(v, np.float64) for k, v in theirs.items() if isinstance(v, np.ndarray)
             and k in produced and v.shape in (W.shape, WC.shape)}
    out = prog.run(X)
    x16 = X["x"].astype(np.float16).astype(np.float64)
    want = x16 @ dense[W.shape].T
    assert np.all(np.abs(out["y"] - want) <= 2 ** -11 * 1.001 * np.abs(want) + 1e-6 * np.abs(want).max())


def test_constexpr_cast(tmp_path):
    from coremltools.converters.mil import Builder as mb

    w16 = RNG.standard_normal((4, 3)).astype(np.float16)

    def body(x):
        return {"y": mb.linear(x=x, weight=mb.constexpr_cast(source_val=w16, output_dtype="fp32"))}
    prog = Program(save_program({"x": (2, 3)}, body, tmp_path / "c.mlpackage", "fp32", "iOS16"))
    assert prog.op_counts.get("constexpr_cast") == 1
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(prog.run({"x": x})["y"], x @ w16.astype(np.float32).T, rtol=1e-6, atol=1e-6)


def test_round_fp16_is_ieee_round_to_nearest_even():
    bits = RNG.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    scaled = np.concatenate([RNG.standard_normal(100_000).astype(np.float32) * s
                             for s in (1e-7, 3e-5, 6e-5, 1.0, 3e4)])
    edges = np.array([0, -0.0, 65504, 65519.99, 65520, -65520, np.inf, -np.inf, np.nan, 2 ** -14, 2 ** -25,
                      3 * 2 ** -25, 1.5 * 2 ** -24, 1e-45, 1 + 2 ** -11, 1 + 3 * 2 ** -11], np.float32)
    for arr in (bits, scaled, edges):
        with np.errstate(all="ignore"):
            ours, numpy_ = round_fp16(arr), arr.astype(np.float16).astype(np.float32)
        assert np.array_equal(ours, numpy_, equal_nan=True)


@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6, 8])
def test_sub_byte_unpacking_matches_coremltools_packing(nbits):
    from coremltools.optimize import _utils

    for signed in (False, True):
        lo, hi = (-(1 << (nbits - 1)), 1 << (nbits - 1)) if signed else (0, 1 << nbits)
        values = RNG.integers(lo, hi, 1001).astype(np.int8 if signed else np.uint8)
        packed = _utils.pack_elements_into_bits(values, nbits)
        np.testing.assert_array_equal(unpack_bits(packed, nbits, len(values), signed), values)


def test_the_spec_reads_like_coremltools_reads_it(tmp_path):
    import coremltools as ct

    path = save_program({k: v.shape for k, v in X.items()}, _body, tmp_path / "m.mlpackage", "fp16")
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    prog = Program(path)
    assert prog.spec.spec_version == spec.specificationVersion and prog.spec.opset == fn.opset
    assert [(o.type, [n for n, _ in o.outputs]) for o in prog.spec.ops] == \
        [(o.type, [v.name for v in o.outputs]) for o in block.operations]
    assert [f.name for f in prog.spec.inputs] == [f.name for f in spec.description.input]
    assert [tuple(f.shape) for f in prog.spec.outputs] == [tuple(f.type.multiArrayType.shape)
                                                          for f in spec.description.output]
    for op, theirs in zip(prog.spec.ops, block.operations):
        for (_, t), v in zip(op.outputs, theirs.outputs):
            dims = [d.constant.size for d in v.type.tensorType.dimensions]
            assert list(t.shape) == dims, op.name


def test_damaged_packages_are_refused_with_the_reason(tmp_path):
    path = save_program({k: v.shape for k, v in X.items()}, _body, tmp_path / "m.mlpackage")
    weights = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    broken = tmp_path / "broken.mlpackage"
    shutil.copytree(path, broken)
    (broken / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").unlink()
    with pytest.raises(SpecError, match="weights/weight.bin, which is missing"):
        Program(broken)
    shutil.rmtree(broken)
    shutil.copytree(path, broken)
    bad = broken / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    bad.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(SpecError, match="weight.bin"):
        Program(broken)
    data = bytearray(weights.read_bytes())
    data[64:68] = b"\0\0\0\0"                                   # the first blob's sentinel
    bad.write_bytes(bytes(data))
    with pytest.raises(SpecError, match="bad sentinel"):
        Program(broken)
    (broken / "Manifest.json").unlink()
    with pytest.raises(SpecError, match="not an .mlpackage"):
        Program(broken)
    (tmp_path / "empty.mlpackage").mkdir()
    (tmp_path / "empty.mlpackage" / "Manifest.json").write_text(json.dumps({"itemInfoEntries": {}}))
    with pytest.raises(SpecError, match="unreadable"):
        Program(tmp_path / "empty.mlpackage")


def test_an_op_it_does_not_implement_is_named_never_guessed(tmp_path):
    from coremltools.converters.mil import Builder as mb

    def body(x):
        return {"v": mb.topk(x=x, k=2)[0], "r": mb.relu(x=x)}
    path = save_program({"x": (2, 5)}, body, tmp_path / "t.mlpackage")
    with pytest.raises(UnsupportedOp, match="op topk") as exc:
        Program(path)
    assert exc.value.op_type == "topk"

    def variant(x):
        return {"y": mb.upsample_nearest_neighbor(x=x, scale_factor_height=1.5, scale_factor_width=1.0)}
    prog = Program(save_program({"x": (1, 1, 4, 4)}, variant, tmp_path / "u.mlpackage"))
    with pytest.raises(UnsupportedOp, match="upsample_nearest_neighbor.*integer upsampling"):
        prog.run({"x": np.zeros((1, 1, 4, 4), np.float32)})


def test_device_bench_runs_a_package_without_tensorflow_keras_or_coremltools(tmp_path):
    from coremltools.converters.mil import Builder as mb

    path = save_program({"x": (2, 96)}, lambda x: {"y": mb.linear(x=x, weight=W)}, tmp_path / "m.mlpackage", "fp16")
    code = ("import sys, numpy as np\n"
            "from device_bench.runners import open_model\n"
            f"s = open_model('coreml-ref', {str(path)!r})\n"
            "x = np.random.default_rng(0).standard_normal((3, 96)).astype(np.float32)\n"
            "y = s.run(x)\n"
            "err = np.abs(y - x.astype(np.float16).astype(np.float32) @ np.load(sys.argv[1]).T).max()\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'edgeprep', 'coremltools',"
            " 'google')]\n"
            "print(y.shape, y.dtype, err < 0.05, bad, s.describe()['reference_executor'])\n")
    np.save(tmp_path / "w.npy", W)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w.npy")], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "(3, 64) float32 True [] True"
