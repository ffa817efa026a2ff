"""device_bench: run and measure deployable model artifacts with only numpy and the runtime installed.

This package must never import TensorFlow, Keras or edgeprep: it is copied onto devices (phones, boards, Macs)
that have a Python, numpy and one runtime (LiteRT, OpenVINO, ONNX Runtime, Core ML).

    from device_bench.runners import open_model
    session = open_model("litert", "model.int8.tflite", threads=2)
    probabilities = session.run(images)           # float32 in, float32 out; int8 I/O handled inside
"""

__version__ = "0.1.0"
