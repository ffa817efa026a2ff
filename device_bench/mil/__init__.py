"""A reference executor for Core ML ML Programs (``.mlpackage``), in pure numpy.

coremltools converts and compresses models on Linux but cannot run them there (prediction is macOS-only). This
package reads an ``.mlpackage`` and runs its MIL program's ``main`` function op by op with numpy, so the numerics
of a Core ML artifact can be checked on any machine, including inside device_bench on a device.

    from device_bench.mil import Program
    prog = Program("model.fp16.mlpackage")
    outputs = prog.run({"image": x})                  # {output name: array}
    everything = prog.run({"image": x}, keep=True)    # plus every intermediate value by MIL variable name

How it reads the package (measured, and why): with coremltools installed, ``import coremltools`` (even
``coremltools.proto.MIL_pb2``) runs coremltools' top-level import, which probes for and imports TensorFlow: 3.8 s
here, and ``tensorflow``/``keras`` land in ``sys.modules``. device_bench must run without TensorFlow, Keras or
coremltools, so this package never imports coremltools: ``wire.py`` decodes the protobuf wire format of
``Data/com.apple.CoreML/model.mlmodel`` (no ``protobuf`` dependency either; reading the example model's spec
takes about 10 ms) and ``blob.py`` reads the ``weights/weight.bin`` blob format (64-byte aligned metadata records,
sub-byte types packed LSB first). coremltools' own loader (``milproto.load``) is used only in the tests, as an
independent reading of the same package.

What it models:
- Every op computes in float32 (float64 for transcendental functions and normalization statistics) and its
  result is rounded to the type the program declares: fp16 programs carry fp16 values between ops (round to
  nearest even), fp32 programs fp32. That is how a device's fp16 path stores tensors.
- Weight compression (8-bit affine / block-wise shift-scale, LUT palettization, sparsity) is decompressed exactly
  as the op definitions say, once at load.

What it does not model (so small differences from a real device are expected, large ones are not):
- Accumulation order and precision inside an op: conv/matmul accumulate in float32 here (BLAS order); the Neural
  Engine accumulates fp16 products in its own order and precision, the GPU may use fp16 accumulators.
- Kernel-specific approximations on the device (e.g. of exp, erf, sigmoid) and op fusion by Core ML's compiler.
- Which compute unit runs which op (``compute_units``), image inputs, flexible shapes, control flow, stateful
  models. Ops it does not implement are refused by name (``UnsupportedOp``), never approximated.
"""

from device_bench.mil.errors import ExecutionError, MILError, SpecError, UnsupportedOp
from device_bench.mil.executor import Program
from device_bench.mil.ops import registry

__all__ = ["ExecutionError", "MILError", "Program", "SpecError", "UnsupportedOp", "registry"]
