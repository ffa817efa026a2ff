"""Convert stage: model -> one deployable artifact, written atomically and read back for inspection."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeprep._util import files_of, quiet, replace, sha256_of, tree_size
from edgeprep.backends import Artifact, ConvertRequest, get_backend
from edgeprep.config.quantize import QuantizeConfig
from edgeprep.data import Dataset
from edgeprep.errors import ConversionError, DataError
from edgeprep.models import ModelHandle


def convert(model: ModelHandle, fmt: str, precision: str, options: Any, out: Path, *,
            calibration: Dataset | None = None, calibration_samples: int = 500,
            workdir: Path | None = None, quantize: QuantizeConfig | None = None, keep_float: tuple[str, ...] = (),
            max_accuracy_drop: float | None = None) -> Artifact:
    """Convert ``model`` to ``fmt`` at ``precision`` and write it at ``out`` (plus companion files).

    Nothing appears under ``out`` unless the conversion completed: the backend writes into a temporary directory
    beside it and the finished files are renamed into place.
    """
    backend = get_backend(fmt)
    backend.check(model, precision)
    if precision == "int8" and fmt != "coreml" and calibration is None:
        raise DataError(f"{fmt} int8 needs calibration data", "pass --data with representative samples")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    own_workdir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="edgeprep-")) if own_workdir else Path(workdir)
    start = time.perf_counter()
    try:
        request = ConvertRequest(precision, options, calibration, calibration_samples, workdir,
                                 quantize or QuantizeConfig(), tuple(keep_float), max_accuracy_drop)
        tmp_main = staging / out.name
        with quiet():
            result = backend.convert(model, request, tmp_main)
        if not tmp_main.exists():
            raise ConversionError(f"{fmt} converter wrote nothing for {out.name}")
        produced = [tmp_main] + backend.companion_files(tmp_main)
        for p in produced:
            replace(p, out.parent / p.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.perf_counter() - start
    files = [f for p in [out] + backend.companion_files(out) for f in files_of(p)]
    with quiet():
        inspection = backend.inspect(out)
    runtime, runtime_options, reason = backend.runtime(options)
    return Artifact(format=fmt, precision=precision, path=out, files=tuple(files),
                    size_bytes=tree_size(files), sha256=sha256_of(files, root=out.parent),
                    quantization=result.quantization, inspection=inspection, runtime=runtime,
                    runtime_options=runtime_options, unavailable_reason=reason, notes=result.notes,
                    convert_seconds=round(seconds, 3))


SUFFIX_FORMATS = {".tflite": "tflite", ".xml": "openvino", ".mlpackage": "coreml"}


def open_artifact(path: str | Path, options_for=None) -> Artifact:
    """Describe an existing artifact file (for ``edgeprep verify``): hash, size, inspection, runtime.

    The precision is read from the file name (``model.int8.tflite``) when present, else from its input tensor
    (integer input means int8), else reported as ``unknown``. ``options_for(fmt)`` supplies runtime options.
    """
    from edgeprep.errors import InputError

    path = Path(path).resolve()
    if not path.exists():
        raise InputError(f"artifact not found: {path}", "check the path")
    fmt = SUFFIX_FORMATS.get(path.suffix)
    if fmt is None:
        raise InputError(f"unsupported artifact '{path.name}'",
                         f"edgeprep verifies {', '.join(SUFFIX_FORMATS)} files")
    backend = get_backend(fmt)
    try:
        with quiet():
            inspection = backend.inspect(path)
    except Exception as exc:
        from edgeprep._util import first_line

        raise InputError(f"{path.name}: cannot read the {fmt} artifact ({first_line(exc)})",
                         "check the file is complete; re-create it with 'edgeprep convert'") from None
    precision = next((p for p in ("fp32", "fp16", "int8") if f".{p}." in path.name), None)
    if precision is None:
        dtypes = {i.get("dtype") for i in inspection.get("inputs", [])}
        precision = "int8" if dtypes & {"int8", "uint8"} else "unknown"
    files = [f for p in [path] + backend.companion_files(path) for f in files_of(p)]
    missing = [f for f in backend.companion_files(path) if not f.exists()]
    if missing:
        raise InputError(f"{path.name}: companion file {missing[0].name} is missing", "keep .xml and .bin together")
    options = options_for(fmt) if options_for else backend.options_type()
    runtime, runtime_options, reason = backend.runtime(options)
    return Artifact(format=fmt, precision=precision, path=path, files=tuple(files), size_bytes=tree_size(files),
                    sha256=sha256_of(files, root=path.parent), quantization={}, inspection=inspection,
                    runtime=runtime, runtime_options=runtime_options, unavailable_reason=reason)
