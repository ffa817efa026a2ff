"""Convert stage: model -> one deployable artifact, written atomically and read back for inspection."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeprep._util import files_of, quiet, sha256_of, tree_size
from edgeprep.artifact import Artifact, ConvertRequest
from edgeprep.backends import get_backend, needing_calibration, suffix_formats
from edgeprep.config.quantize import QuantizeConfig
from edgeprep.data import Dataset
from edgeprep.errors import ConversionError, DataError
from edgeprep.models import ModelHandle
from edgeprep.outputs import check_replaceable, check_writable_dir, full_disk_error, private_dir, publish, staging
from edgeprep.targets import TargetProfile


def artifact_out(out: Path | None, fmt: str, model_name: str, precision: str) -> tuple[Path, str | None]:
    """Where ``edgeprep convert`` writes, checked before any work; returns the path and a note when it differs
    from what was asked (``--out`` a directory or ending in ``/``: the artifact goes inside it under its default
    name; ``--out`` without the format's suffix: the suffix is added)."""
    backend = get_backend(fmt)
    default = backend.artifact_name(model_name, precision)
    if out is None:
        path, note = Path(default), None
    else:
        asked = str(out)
        path, note = Path(out), None
        inside = asked.endswith("/") or (path.is_dir() and not (
            path.suffix == backend.suffix and backend.recognizes(path)))
        if inside:
            path, note = path / default, f"--out {asked} is a directory: writing {path / default}"
        elif path.suffix != backend.suffix:
            path = path.with_name(path.name + backend.suffix)
            note = f"--out {asked} has no {backend.suffix} suffix: writing {path}"
    path = path.resolve()
    check_artifact_replaceable(path, fmt)
    check_writable_dir(path.parent)
    return path, note


def check_artifact_replaceable(path: Path, fmt: str) -> None:
    """An artifact path may hold only an artifact of the same format (an earlier conversion), never anything
    else; its companion files (OpenVINO's .bin) are replaced only together with such an artifact."""
    backend = get_backend(fmt)
    what = f"a {fmt} artifact"
    check_replaceable(path, backend.recognizes, what)
    for companion in backend.companion_files(path):
        check_replaceable(companion, lambda _p: backend.recognizes(path), f"the companion of {what}")


def convert(model: ModelHandle, fmt: str, precision: str, options: Any, out: Path, *,
            calibration: Dataset | None = None, calibration_samples: int = 500,
            workdir: Path | None = None, quantize: QuantizeConfig | None = None, keep_float: tuple[str, ...] = (),
            max_accuracy_drop: float | None = None) -> Artifact:
    """Convert ``model`` to ``fmt`` at ``precision`` and write it at ``out`` (plus companion files).

    Nothing appears under ``out`` unless the conversion completed: the backend writes into a temporary directory
    beside it and the finished files are renamed into place. What stands at ``out`` is replaced only when it is
    an artifact of the same format (``check_artifact_replaceable``).
    """
    backend = get_backend(fmt)
    backend.check(model, precision)
    needs = needing_calibration([(fmt, precision)])
    if needs and calibration is None:
        raise DataError(f"{needs[0]} needs calibration data", "pass --data with representative samples")
    out = Path(out).resolve()
    check_artifact_replaceable(out, fmt)
    own_workdir = workdir is None
    start = time.perf_counter()
    with staging(out) as tree, (private_dir(Path(tempfile.gettempdir()), "edgeprep-") if own_workdir
                                      else contextlib.nullcontext(Path(workdir))) as work:
        request = ConvertRequest(precision, options, calibration, calibration_samples, work,
                                 quantize or QuantizeConfig(), tuple(keep_float), max_accuracy_drop)
        tmp_main = tree / out.name
        try:
            with quiet():
                result = backend.convert(model, request, tmp_main)
        except Exception as exc:
            full = full_disk_error(tree)
            if full is not None:
                raise full from exc
            raise
        if not tmp_main.exists():
            raise ConversionError(f"{fmt} converter wrote nothing for {out.name}")
        check_artifact_replaceable(out, fmt)   # again: something may have appeared there meanwhile
        for p in backend.companion_files(tmp_main) + [tmp_main]:   # the main file last: it marks completion
            publish(p, out.parent / p.name, lambda _p: True, "")
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


def artifact_format(path: Path) -> str:
    """An artifact's format, from its content; a name whose suffix promises another format is refused."""
    from edgeprep.errors import InputError

    suffixes = suffix_formats()
    found = [fmt for fmt in suffixes.values() if get_backend(fmt).recognizes(path)]
    named = suffixes.get(path.suffix)
    if not found:
        if named:
            raise InputError(f"{path.name} is named like a {named} artifact but is not one (its content is not "
                             f"{get_backend(named).content})",
                             "check the file is complete; re-create it with 'edgeprep convert'")
        raise InputError(f"unsupported artifact '{path.name}': not a TFLite, OpenVINO IR or Core ML package",
                         f"edgeprep reads {', '.join(suffixes)} artifacts")
    if named and named != found[0]:
        raise InputError(f"{path.name} is named like a {named} artifact but holds a {found[0]} one",
                         f"rename it with the {get_backend(found[0]).suffix} suffix")
    return found[0]


def open_artifact(path: str | Path, options_for=None) -> Artifact:
    """Describe an existing artifact file (for ``edgeprep verify``): hash, size, inspection, runtime.

    The precision is read from the file name (``model.int8.tflite``) when present, else from its input tensor
    (integer input means int8), else reported as ``unknown``. ``options_for(fmt)`` supplies runtime options.
    """
    from edgeprep.errors import InputError

    path = Path(path).resolve()
    if not path.exists():
        raise InputError(f"artifact not found: {path}", "check the path")
    fmt = artifact_format(path)
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


def target_options(target: TargetProfile | None, fmt: str, precision: str) -> dict:
    """Everything ``stages.convert.convert`` takes from a target (or the defaults without one): one place, so
    ``run``, ``quantize`` and ``convert`` convert with the same options. keep_float = auto converts with nothing
    kept; the search (``pipelines.refine.refine_int8``) re-quantizes afterwards."""
    q = target.quantize if target else QuantizeConfig()
    options = target.options_for(fmt) if target else get_backend(fmt).options_type()
    return {"fmt": fmt, "precision": precision, "options": options, "calibration_samples": q.calibration_samples,
            "quantize": q, "keep_float": () if q.keep_float_auto else q.keep_float,
            "max_accuracy_drop": target.gates.for_precision("int8").max_accuracy_drop if target else None}
