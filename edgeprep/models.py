"""Load a model file into one handle: ``.keras``, legacy ``.h5``, a SavedModel directory, or ``.onnx``.

The handle knows its kind, its single input and output, and can compute float reference outputs. TensorFlow,
Keras and ONNX Runtime are imported only when a model of that kind is loaded.

An ``.onnx`` file loads as an ONNX Runtime handle (kind ``onnx``); ``edgeprep.onnx.to_keras`` (which the pipelines
call once the data is known) turns it into a Keras handle whose ``onnx`` keeps the ONNX Runtime reference: its
``predict`` is ONNX Runtime on the original file, its ``obj`` the converted Keras graph every stage works on.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from edgeprep._util import files_of, first_line, quiet, sha256_of, tree_size
from edgeprep.errors import InputError, ModelError
from edgeprep.toolchain import require, require_tensorflow

ModelKind = Literal["keras", "savedmodel", "onnx"]


def model_name(path: str | Path) -> str:
    """A model's name for the files made from it: ``model.keras`` -> ``model``, a SavedModel directory's name."""
    p = Path(path)
    return p.stem if p.suffix else p.name


@dataclass
class ModelHandle:
    """A loaded model. ``obj`` is the Keras model, the SavedModel signature function, or the ONNX Runtime session."""

    path: Path
    kind: ModelKind
    obj: Any = field(repr=False)
    input_name: str
    input_shape: tuple[int | None, ...]  # without the batch axis
    output_shape: tuple[int | None, ...]
    sha256: str = ""
    size_bytes: int = 0
    _saved_model_dir: Path | None = field(default=None, repr=False)
    onnx: Any = field(default=None, repr=False)    # edgeprep.onnx.reference.OnnxReference: converted from ONNX
    label: str | None = None     # what reports call a model that has no file of its own (a keras.Model object)

    @property
    def name(self) -> str:
        return model_name(self.path)

    @property
    def is_keras(self) -> bool:
        return self.kind == "keras"

    def describe(self) -> dict:
        return {"path": self.label or str(self.path), "kind": "onnx" if self.onnx is not None else self.kind,
                "sha256": self.sha256, "size_bytes": self.size_bytes,
                "input": {"name": self.input_name, "shape": list(self.input_shape)},
                "output": {"shape": list(self.output_shape)},
                **({"parameters": int(self.obj.count_params())} if self.is_keras else {}),
                **({"onnx": self.onnx.describe()} if self.onnx is not None else {})}

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Float reference outputs for a preprocessed batch (inference mode)."""
        outs = [self._predict(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def predict_batches(self, batches: Iterator[np.ndarray]) -> np.ndarray:
        return np.concatenate([self._predict(b) for b in batches]).astype(np.float32, copy=False)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if self.onnx is not None:        # converted from ONNX: the reference is ONNX Runtime on the original
            return self.onnx.run(x)
        if self.kind == "keras":
            return np.asarray(self.obj(x, training=False))
        if self.kind == "savedmodel":
            import tensorflow as tf

            out = self.obj(**{self.input_name: tf.constant(x)})
            return np.asarray(next(iter(out.values())))
        batch = self.obj.get_inputs()[0].shape[0]
        if isinstance(batch, int) and batch > 0 and batch != len(x):  # static batch axis: feed it in its size
            return np.concatenate([self.obj.run(None, {self.input_name: x[i:i + batch]})[0]
                                   for i in range(0, len(x), batch)])
        return self.obj.run(None, {self.input_name: x})[0]

    def saved_model_dir(self, workdir: Path) -> Path:
        """A SavedModel of this model (the original directory, or a Keras export made once into ``workdir``)."""
        if self.kind == "savedmodel":
            return self.path
        if self.kind != "keras":
            raise ModelError(f"{self.path}: a {self.kind} model has no SavedModel form")
        if self._saved_model_dir is None or not self._saved_model_dir.exists():
            target = Path(workdir) / f"{self.name}.savedmodel"
            with quiet():
                self.obj.export(str(target), format="tf_saved_model", verbose=False)
            self._saved_model_dir = target
        return self._saved_model_dir


def detect_kind(path: Path) -> ModelKind:
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "savedmodel"
        raise InputError(f"{path} is a directory but not a SavedModel (no saved_model.pb)",
                         "pass a .keras or .h5 file, a SavedModel directory, or an .onnx file")
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5"):
        return "keras"
    if suffix == ".onnx":
        return "onnx"
    raise InputError(f"unsupported model format '{suffix or path.name}' ({path})",
                     "pass a .keras or .h5 file, a SavedModel directory, or an .onnx file")


def check_model_path(path: str | Path) -> ModelKind:
    """Cheap checks before anything heavy is imported: the file exists and its format is supported."""
    path = _model_arg(path)
    if not path.exists():
        raise InputError(f"model not found: {path}", "check the path")
    return detect_kind(path)


# Files ``saved_model_object`` wrote for keras.Model objects -> the name reports give the model ("keras.Model
# 'small_cnn'"): the pipelines take paths, and the object's temporary file is not where it came from.
_OBJECT_LABELS: dict[Path, str] = {}


def _model_arg(model: Any) -> Path:
    """``model`` as a path; anything that is neither a path nor a string is refused with what was passed."""
    if isinstance(model, (str, os.PathLike)):
        return Path(model)
    what = "a keras.Model object" if is_keras_model(model) else f"a {type(model).__module__}.{type(model).__name__}"
    raise InputError(f"a model is a path to a .keras/.h5 file, a SavedModel directory or an .onnx file; got {what}",
                     "pass a path" + (" (edgeprep.run and edgeprep.convert take keras.Model objects too)"
                                      if is_keras_model(model) else ""))


def is_keras_model(obj: Any) -> bool:
    """Whether ``obj`` is a keras.Model (checked without importing Keras: an object of it means it is loaded)."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Model)


def file_name(name: str) -> str:
    """A model name as a file stem (``my model/v2`` -> ``my_model_v2``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


@contextlib.contextmanager
def saved_model_object(model: Any) -> Iterator[Path]:
    """A keras.Model object saved as ``<model.name>.keras`` in a new temporary directory (never beside the user's
    files), for the pipelines, which take paths; removed afterwards. ``load_model`` of that path gives a handle
    named ``model.name`` whose report entry says ``keras.Model '<name>'``, not the temporary path."""
    if not is_keras_model(model):
        raise InputError(f"expected a keras.Model, got a {type(model).__module__}.{type(model).__name__}",
                         "pass a keras.Model object or a model path")
    directory = Path(tempfile.mkdtemp(prefix="edgeprep-model-"))
    path = (directory / f"{file_name(model.name)}.keras").resolve()
    try:
        with quiet():
            try:
                model.save(path)
            except Exception as exc:    # unbuilt, subclassed without get_config, ...: Keras says which
                raise ModelError(f"cannot save the keras.Model '{model.name}' to a .keras file ({first_line(exc)})",
                                 "edgeprep needs a model Keras can save and load: build it (call it on an input "
                                 "or give keras.Input) and register custom layers") from None
        _OBJECT_LABELS[path] = f"keras.Model '{model.name}'"
        yield path
    finally:
        _OBJECT_LABELS.pop(path, None)
        shutil.rmtree(directory, ignore_errors=True)


def load_model(model: str | Path | Any) -> ModelHandle:
    """Load a model file (or a keras.Model object); every failure becomes one ``InputError``/``ModelError`` line.

    An object is saved to a temporary ``.keras`` file and loaded from it, so the handle holds a copy: no stage
    changes the caller's model."""
    if is_keras_model(model):
        with saved_model_object(model) as path:
            return load_model(path)
    path = _model_arg(model)
    kind = check_model_path(path)
    loader = {"keras": _load_keras, "savedmodel": _load_savedmodel, "onnx": _load_onnx}[kind]
    handle = loader(path)
    files = files_of(path)
    handle.sha256 = sha256_of(files, root=path if path.is_dir() else None)
    handle.size_bytes = tree_size(files)
    handle.label = _OBJECT_LABELS.get(path.resolve())
    return handle


def _single(shapes: list, what: str, path: Path) -> tuple:
    if len(shapes) != 1:
        raise ModelError(f"{path}: the model has {len(shapes)} {what}s; edgeprep handles single-input, "
                         f"single-output vision models", "export a model with one image input and one output")
    return tuple(None if (d is None or d == -1 or isinstance(d, str)) else int(d) for d in shapes[0])


def _load_keras(path: Path) -> ModelHandle:
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a valid .keras file (it is not a zip archive; the file may be truncated)",
                         "re-save the model with model.save('model.keras')")
    require_tensorflow("loading a Keras model")
    with quiet() as log:
        import keras

        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as exc:  # corrupt or foreign files raise many types; all mean the same thing to the user
            cause = first_line(exc)
            raise ModelError(f"{path}: cannot load the Keras model ({cause})",
                             "check the file is complete and was saved by Keras 3 (or Keras 2 as .h5); models "
                             "with custom layers need those layers importable") from None
    del log
    inputs = [tuple(t.shape) for t in model.inputs] if getattr(model, "inputs", None) else []
    outputs = [tuple(t.shape) for t in model.outputs] if getattr(model, "outputs", None) else []
    in_shape = _single(inputs, "input", path)
    out_shape = _single(outputs, "output", path)
    name = model.inputs[0].name if hasattr(model.inputs[0], "name") else "input"
    return ModelHandle(path, "keras", model, str(name), in_shape[1:], out_shape[1:])


def _load_savedmodel(path: Path) -> ModelHandle:
    require_tensorflow("loading a SavedModel")
    with quiet():
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:
            raise ModelError(f"{path}: cannot load the SavedModel ({first_line(exc)})",
                             "check the directory is a complete TensorFlow SavedModel") from None
    sigs = dict(getattr(loaded, "signatures", {}))
    if "serving_default" in sigs:
        fn = sigs["serving_default"]
    elif len(sigs) == 1:
        fn = next(iter(sigs.values()))
    else:
        raise ModelError(f"{path}: the SavedModel has no 'serving_default' signature "
                         f"(signatures: {', '.join(sigs) or 'none'})", "export it with a serving_default signature")
    ins = fn.structured_input_signature[1]
    outs = fn.structured_outputs
    in_shape = _single([tuple(s.shape) for s in ins.values()], "input", path)
    out_shape = _single([tuple(s.shape) for s in outs.values()], "output", path)
    handle = ModelHandle(path, "savedmodel", fn, next(iter(ins)), in_shape[1:], out_shape[1:])
    handle._keepalive = loaded  # the signature function needs its object graph alive
    return handle


def _load_onnx(path: Path) -> ModelHandle:
    # ONNX Runtime is the float reference; edgeprep.onnx reads the graph (onnx) into Keras layers (TensorFlow)
    require("an .onnx model", "onnx", "onnxruntime")
    require_tensorflow("an .onnx model (converted to a Keras graph)")
    import onnxruntime as ort
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{path}: cannot load the ONNX model ({first_line(exc)})",
                         "check the file is a complete ONNX model") from None
    ins, outs = sess.get_inputs(), sess.get_outputs()
    in_shape = _single([tuple(i.shape) for i in ins], "input", path)
    out_shape = _single([tuple(o.shape) for o in outs], "output", path)
    if ins[0].type != "tensor(float)":
        raise ModelError(f"{path}: the ONNX model input is {ins[0].type}; edgeprep feeds float32 images",
                         "export the model with a float32 input")
    return ModelHandle(path, "onnx", sess, ins[0].name, in_shape[1:], out_shape[1:])
