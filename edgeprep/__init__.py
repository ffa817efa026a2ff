"""edgeprep: one trained Keras/TensorFlow vision model -> verified, measured artifacts for edge devices.

Importing edgeprep is cheap: toolchains (TensorFlow, LiteRT, OpenVINO, coremltools, NNCF) are imported only by the
stage or backend that needs them. The public entry points:

    from edgeprep.pipelines.run import run        # the whole pipeline for one target profile
    from edgeprep.targets import load_target      # frozen, validated target profiles
    from edgeprep.models import load_model        # .keras / .h5 / SavedModel / .onnx
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
