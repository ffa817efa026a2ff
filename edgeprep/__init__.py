"""edgeprep: one trained Keras/TensorFlow vision model -> verified, measured artifacts for edge devices.

Importing edgeprep is cheap: toolchains (TensorFlow, LiteRT, OpenVINO, coremltools, NNCF) are imported only by the
stage or backend that needs them, and the names below are imported on first use. The Python API
(``edgeprep.api``, typed; README "Python API"):

    edgeprep.run(model_or_path, target="litert-cpu", data="data.toml")   # -> RunOutcome (report, artifacts, out_dir)
    edgeprep.convert(model_or_path, to="tflite", precision="int8", data="calib.npz")   # -> Artifact
    edgeprep.quantize(model_or_path, target="litert-cpu", data="data.toml", method="ptq")   # -> RunOutcome
    edgeprep.verify(model_or_path, ["m.int8.tflite"], data="data.toml")   # -> VerifyOutcome (report, metrics)
    edgeprep.bench(["m.int8.tflite"], target="litert-cpu")               # -> RunOutcome (report with bench)

``model_or_path`` is a keras.Model object or a model path. Errors you can fix are ``edgeprep.EdgeprepError``
subclasses (``edgeprep.errors``). The building blocks:

    from edgeprep.pipelines.run import run        # the whole pipeline for one target profile
    from edgeprep.targets import load_target      # frozen, validated target profiles
    from edgeprep.models import load_model        # .keras / .h5 / SavedModel / .onnx, or a keras.Model
    from edgeprep.data import load_data           # manifests, .npz, .npy, image folders
    from edgeprep.stages.convert import convert   # one artifact
    from edgeprep.stages.verify import reference, verify
"""

import os as _os

__version__ = "0.1.0"

# TensorFlow 2.21's oneDNN kernels corrupt the heap on AVX-512 CPUs when they compute the filter gradient of a 1x1
# stride-2 "same" convolution -- the downsampling shortcut of every ResNet-style model -- so QAT on such a model died
# with "malloc(): corrupted top size" or a segfault inside Keras fit. TensorFlow's own kernels are used instead unless
# the environment already chose (TF_ENABLE_ONEDNN_OPTS=1 brings oneDNN back). It must be set before TensorFlow is
# imported; edgeprep imports TensorFlow only after this module. OpenVINO's own oneDNN is not affected by it.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


# name -> the module that defines it, imported when the name is first used (``import edgeprep`` stays cheap)
_LAZY = {"run": "edgeprep.api", "convert": "edgeprep.api", "quantize": "edgeprep.api", "RunOutcome": "edgeprep.api",
         "verify": "edgeprep.api", "bench": "edgeprep.api", "VerifyOutcome": "edgeprep.api",
         "ModelSource": "edgeprep.api", "Artifact": "edgeprep.artifact", "TargetProfile": "edgeprep.targets",
         "load_target": "edgeprep.targets", "EdgeprepError": "edgeprep.errors"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeprep' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
