"""Test helpers: tiny MIL programs built with coremltools' Builder, saved as real .mlpackage files, and
coremltools' own reading of a package's constants (an independent implementation to compare the executor with).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FP16_PASSES = ["common::add_fp16_cast", "common::const_elimination", "common::cast_optimization",
               "common::dead_code_elimination"]


def save_program(inputs: dict[str, tuple], body, path: Path, precision: str = "fp32", opset: str = "iOS16") -> Path:
    """Build ``body(**input_vars) -> {output name: var}`` as the main function and save it as an mlpackage.

    fp32 keeps the program exactly as written (empty pass pipeline). fp16 runs only coremltools' fp16 cast
    insertion and the clean-up that folds the casts of constants, so every op computes in fp16 as written.
    """
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program

    target = getattr(ct.target, opset)
    with Function({k: mb.placeholder(shape=s) for k, s in inputs.items()}, opset_version=target) as func:
        outs = body(**{k: func.inputs[k] for k in inputs})
        func.set_outputs([mb.identity(x=v, name=n) if v.name != n else v for n, v in outs.items()])
    prog = Program()
    prog.add_function("main", func)
    fp16 = precision == "fp16"
    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                       compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
                       pass_pipeline=ct.PassPipeline(pass_names=FP16_PASSES) if fp16 else ct.PassPipeline.EMPTY)
    model.save(str(path))
    return path


def coremltools_constants(path: Path) -> dict[str, np.ndarray]:
    """Every const and decompressed constexpr value of the package by MIL variable name, read by coremltools."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    prog = load(spec, spec.specificationVersion, str(Path(path) / "Data" / "com.apple.CoreML" / "weights"))
    values = {}
    for op in prog.functions["main"].operations:
        if op.op_type == "const":
            values[op.outputs[0].name] = op.outputs[0].val
        elif op.op_type.startswith("constexpr_"):
            val = op.materialized_val_inference()
            for out, v in zip(op.outputs, val if isinstance(val, tuple) else (val,)):
                values[out.name] = v
    return values
