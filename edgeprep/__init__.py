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

__version__ = "0.1.0"
