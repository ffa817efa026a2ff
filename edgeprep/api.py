"""edgeprep's Python API: the CLI's ``run``, ``quantize``, ``convert``, ``verify`` and ``bench`` as functions, for
notebooks and training scripts.

    import edgeprep

    result = edgeprep.run(model, target="litert-cpu", data="calibration_data/fashion_mnist.toml")
    result.passed, result.out_dir, result.artifacts["tflite-int8"]
    art = edgeprep.convert(model, to="tflite", precision="int8", data="calib.npz")
    q = edgeprep.quantize(model, target="litert-cpu", data="data.toml", keep_float="auto")   # a RunOutcome
    v = edgeprep.verify(model, [art.path], data="data.toml", target="litert-cpu")  # v.metrics["m.int8.tflite"]
    b = edgeprep.bench([art.path], target="litert-cpu", out="runs/bench")         # b.report["artifacts"][0]["bench"]

``model`` is a ``keras.Model`` object or a path (``.keras``/``.h5``, a SavedModel directory, ``.onnx``). An object
is saved to a temporary ``.keras`` file in a directory of its own (never beside your files; removed afterwards)
and reports name it ``keras.Model '<model.name>'``; your object is not changed. Each function does what its command
does, with the same options, the same output rules (nothing that edgeprep did not write is replaced) and the same
history record (``run``); every problem you can fix raises an ``edgeprep.errors.EdgeprepError`` subclass whose
message names the problem and the fix, and a missing toolchain is refused before any work, naming the extra to
install (``pip install 'edgeprep[openvino]'``). Progress is silent unless ``progress=True``; warnings are shown.
"""

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Optional, Union

from edgeprep.artifact import PRECISIONS, Artifact
from edgeprep.errors import InputError
from edgeprep.targets import TargetProfile

if TYPE_CHECKING:
    import keras

    ModelSource = Union[str, "os.PathLike[str]", keras.Model]
else:   # keras.Model, for type checkers; at run time Keras is imported only when a model is loaded
    ModelSource = Union[str, os.PathLike, Any]

PathLike = Union[str, "os.PathLike[str]"]
Format = Literal["tflite", "openvino", "coreml"]
Precision = Literal["fp32", "fp16", "int8"]
TargetSource = Union[str, "os.PathLike[str]", TargetProfile]


@dataclass(frozen=True)
class RunOutcome:
    """What ``run`` produced: the run directory, its report (report.json as a dict) and the artifacts in it."""

    out_dir: Path
    report: dict[str, Any]
    artifacts: dict[str, Path]      # "<format>-<precision>" ("tflite-int8") -> absolute path of the artifact
    passed: bool                    # nothing failed: the CLI's exit code 0 (see README "Statuses")
    history: Optional[Path]         # the history file the run was recorded in; None when not recorded

    @property
    def report_path(self) -> Path:
        return self.out_dir / "report.json"

    @property
    def status(self) -> str:
        """The summary's status: passed, measured, unmeasured or failed."""
        return str(self.report["summary"]["status"])


def run(model: ModelSource, target: TargetSource, data: Optional[PathLike] = None, *,
        preprocess: Optional[Mapping[str, Any]] = None, out: Optional[PathLike] = None,
        calibration: Optional[PathLike] = None, split: Optional[float] = None, calibrate: Optional[bool] = None,
        record: bool = True, history: Optional[PathLike] = None, progress: bool = False) -> RunOutcome:
    """``edgeprep run MODEL --target TARGET [--data DATA]``: every stage the target profile asks for.

    ``target``: a profile name (``edgeprep targets``), a ``.toml`` path or a ``TargetProfile``. ``data``: a data
    manifest (``.toml``), ``.npz``, ``.npy`` or image folder (without it int8 is refused and nothing is verified);
    ``calibration``: separate calibration data (``--calib-data``). ``preprocess``: a ``[preprocess]`` table
    (``{"scale": 1/255, "resize": [224, 224], ...}``) that wins over the target's and the manifest's. ``out``: the
    run directory (default ``runs/<model>-<target>/``, as the CLI). ``split``, ``calibrate``: ``--split``,
    ``--calibrate/--no-calibrate``. The run is recorded in the run history (``$EDGEPREP_HISTORY``, else
    ``.edgeprep/history.sqlite``; ``history`` another file) as ``edgeprep run`` records it, unless ``record=False``.
    A run whose artifacts fail a gate returns with ``passed`` False (the CLI's exit code 1); it does not raise.
    """
    from edgeprep import backends
    from edgeprep.history import try_record
    from edgeprep.pipelines.fleet import run_target
    from edgeprep.progress import Reporter

    profile = _target(target, calibrate)
    paths = {"data": _path(data, "data"), "calibration": _path(calibration, "calibration"), "out": _path(out, "out")}
    cli_preprocess = _preprocess(preprocess)
    _split(split)
    if paths["calibration"] is not None and paths["data"] is None:
        raise InputError("calibration= is separate calibration data for data=", "pass data= too")
    backends.require(profile.formats)                  # before the model is saved or loaded
    reporter = Reporter(quiet=not progress)
    with _model_path(model) as model_path:
        result = run_target(model_path, profile, paths["data"], paths["out"], calibration_path=paths["calibration"],
                            cli_preprocess=cli_preprocess, reporter=reporter, split=split)
    recorded = None
    if record:
        recorded = try_record(result.report, result.out_dir / "report.json", _path(history, "history"),
                              warn=reporter.warn)
    artifacts = {f"{a['format']}-{a['precision']}": (result.out_dir / a["path"]).resolve()
                 for a in result.report["artifacts"]}
    return RunOutcome(result.out_dir.resolve(), result.report, artifacts, result.passed, recorded)


def quantize(model: ModelSource, target: TargetSource, data: PathLike, *, method: Literal["ptq", "qat"] = "ptq",
             keep_float: Optional[Union[Literal["auto"], list[str], tuple[str, ...]]] = None, labels: bool = False,
             distill: bool = False, steps: Optional[int] = None, calibration_samples: Optional[int] = None,
             preprocess: Optional[Mapping[str, Any]] = None, out: Optional[PathLike] = None,
             calibration: Optional[PathLike] = None, split: Optional[float] = None, calibrate: Optional[bool] = None,
             progress: bool = False) -> RunOutcome:
    """``edgeprep quantize MODEL --method METHOD --data DATA --target TARGET``: the int8 artifact of every format
    of the target, verified, with its layers ranked by error (``report["artifacts"][i]["layer_errors"]``).

    ``method``: "ptq" (``run`` restricted to the int8 artifacts, no benchmark: the same bytes) or "qat"
    (quantization-aware fine-tuning, on this machine's CPU, then export; the fine-tuned model is saved in the run
    directory). ``keep_float``: "auto" (the worst layers kept float until every [gates.int8] gate is met) or layer
    names. ``labels``/``distill``: what QAT trains on (default: labels when the data has them). ``steps``: QAT
    optimizer steps; ``calibration_samples``: ``--calib-samples``. The other arguments are ``run``'s. Like the
    command, it is not recorded in the run history. A quantization that fails a gate returns with ``passed``
    False; it does not raise."""
    from edgeprep import backends
    from edgeprep.pipelines.quantize import quantize as run_quantize
    from edgeprep.pipelines.quantize import with_overrides
    from edgeprep.progress import Reporter

    if method not in ("ptq", "qat"):
        raise InputError(f"unknown method {method!r}", "method= is \"ptq\" or \"qat\"")
    if labels and distill:
        raise InputError("labels= and distill= exclude each other", "pick one")
    for name, value in (("steps", steps), ("calibration_samples", calibration_samples)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"{name} must be a positive integer, got {value!r}", f"pass e.g. {name}=100")
    keep: Optional[tuple[str, ...]] = None
    if keep_float is not None:
        if keep_float == "auto":
            keep = ("auto",)
        elif isinstance(keep_float, (list, tuple)) and all(isinstance(k, str) and k for k in keep_float):
            keep = tuple(keep_float)
        else:
            raise InputError(f"keep_float= must be \"auto\" or a list of layer names, got {keep_float!r}",
                             "pass keep_float=\"auto\" or keep_float=[\"conv1\", ...]")
    profile = _target(target, calibrate)
    data_path = _path(data, "data")
    if data_path is None:
        raise InputError("quantize needs data= (calibration and evaluation data)",
                         "pass a manifest (.toml), .npz, .npy or image folder")
    paths = {"calibration": _path(calibration, "calibration"), "out": _path(out, "out")}
    cli_preprocess = _preprocess(preprocess)
    _split(split)
    profile = with_overrides(profile, calibration_samples, steps)
    backends.require(profile.formats)
    strategy = None
    if method == "qat":
        from edgeprep.qat.train import make_strategy

        strategy = make_strategy("none", 1)     # this process, one replica: no TF_CONFIG cluster is joined
    reporter = Reporter(quiet=not progress)
    with _model_path(model) as model_path:
        result = run_quantize(model_path, profile, data_path, paths["out"], method=method, labels=labels,
                              distill=distill, keep_float=keep, strategy=strategy, cli_preprocess=cli_preprocess,
                              calibration_path=paths["calibration"], split=split, reporter=reporter)
    artifacts = {f"{a['format']}-{a['precision']}": (result.out_dir / a["path"]).resolve()
                 for a in result.report["artifacts"]}
    return RunOutcome(result.out_dir.resolve(), result.report, artifacts, result.passed, None)

def convert(model: ModelSource, to: Format, precision: Precision = "fp32", *, data: Optional[PathLike] = None,
            target: Optional[TargetSource] = None, preprocess: Optional[Mapping[str, Any]] = None,
            out: Optional[PathLike] = None, calibrate: Optional[bool] = None,
            calibration_samples: Optional[int] = None, split: Optional[float] = None,
            progress: bool = False) -> Artifact:
    """``edgeprep convert MODEL --to TO --precision PRECISION``: one artifact, returned as an ``Artifact``
    (``path``, ``files``, ``size_bytes``, ``sha256``, ``quantization``, ``inspection``, ...).

    ``data``: calibration data (int8 needs it; ``--calibrate`` re-estimates BatchNorm on it). ``target``: take
    format options, preprocessing and calibration size from this profile. ``out``: a file path (the format's
    suffix is added when missing) or a directory (the artifact gets ``<model>.<precision>.<ext>`` inside it);
    default: that name in the current directory. Only an artifact of the same format is ever replaced. The model
    is prepared exactly as the command prepares it (BatchNorm folded, re-estimated with ``calibrate``), so the
    same model, data and target give the same bytes from the command, from ``run`` and from here.
    """
    from edgeprep import backends
    from edgeprep.progress import Reporter

    if to not in backends.LISTED:
        raise InputError(f"unknown format {to!r}", f"to= is one of {', '.join(backends.LISTED)}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}", f"precision= is one of {', '.join(PRECISIONS)}")
    if calibration_samples is not None and (isinstance(calibration_samples, bool)
                                            or not isinstance(calibration_samples, int) or calibration_samples < 1):
        raise InputError(f"calibration_samples must be a positive integer, got {calibration_samples!r}",
                         "pass e.g. calibration_samples=500")
    profile = _target(target, calibrate) if target is not None else None
    data_path, out_path = _path(data, "data"), _path(out, "out")
    cli_preprocess = _preprocess(preprocess)
    _split(split)
    backends.get_backend(to).require()                 # before the model is saved or loaded
    reporter = Reporter(quiet=not progress)
    with _model_path(model) as model_path:
        return _convert(model_path, to, precision, data_path, profile, cli_preprocess,
                        None if out_path is None else str(out_path) + ("/" if str(out).endswith("/") else ""),
                        calibrate, calibration_samples, split, reporter)


def _convert(model: Path, fmt: str, precision: str, data: Optional[Path], target: Optional[TargetProfile],
             cli_preprocess: dict, out: Optional[str], recalibrate: Optional[bool], calib_samples: Optional[int],
             split: Optional[float], reporter: Any) -> Artifact:
    """The steps of ``edgeprep convert`` (``edgeprep.commands.convert``), in its order, with its functions."""
    from edgeprep.backends import get_backend, needing_calibration
    from edgeprep.config.calibrate import CalibrateConfig
    from edgeprep.config.quantize import few_samples_warning
    from edgeprep.data import check_fits, load_data, preprocess_from, read_warnings
    from edgeprep.models import check_model_path, load_model, model_name
    from edgeprep.pipelines.run import onnx_as_keras, overlap_warning
    from edgeprep.stages.convert import artifact_out, target_options
    from edgeprep.stages.convert import convert as convert_stage
    from edgeprep.stages.prepare import prepare

    calibrate_cfg = target.calibrate if target else CalibrateConfig(enabled=bool(recalibrate))
    backend = get_backend(fmt)
    check_model_path(model)
    needs = needing_calibration([(fmt, precision)])
    if data is None and needs:
        raise InputError(f"{needs[0]} needs calibration data", "pass data= with representative samples")
    if data is None and calibrate_cfg.enabled:
        raise InputError("calibrate=True (or the target's [calibrate]) re-estimates BatchNorm statistics from data",
                         "pass data=, or calibrate=False")
    out_path, note = artifact_out(out, fmt, model_name(model), precision)
    if note:
        reporter.info(note)
    with reporter.step(f"Loading {model.name}"):
        handle = load_model(model)
    spec = calibration = None
    target_pre = target.preprocess if target else None
    if data is not None:
        spec = load_data(data, preprocess_layers=(target_pre,), cli_preprocess=cli_preprocess, split=split)
        calibration = spec.calibration
    handle = onnx_as_keras(handle, spec.evaluation if spec else None,
                           spec.evaluation.preprocess if spec else preprocess_from(target_pre, cli_preprocess),
                           reporter)
    backend.check(handle, precision)
    if calibration is not None:
        check_fits(calibration, handle.input_shape, f"the model ({handle.name})")
        for warning in read_warnings(calibration):
            reporter.warn(warning)
    opts = target_options(target, fmt, precision)
    if calib_samples:
        opts["calibration_samples"] = calib_samples
        opts["quantize"] = dataclasses.replace(opts["quantize"], calibration_samples=calib_samples)
    if precision == "int8" and calibration is not None:
        warning = few_samples_warning(opts["calibration_samples"], calibration.count, calibration.source)
        if warning:
            reporter.warn(warning)
    if precision == "int8" and opts["quantize"].keep_float_auto:
        reporter.warn("keep_float = auto is not applied by convert (choosing the layers needs the evaluation "
                      "edgeprep.run does): nothing is kept in float")
    if calibrate_cfg.enabled and spec is not None:
        warning = overlap_warning(spec, "BatchNorm re-estimation (and its before/after top-1)")
        if warning:
            reporter.warn(warning)
    prepared = prepare(handle, calibrate_cfg, spec, reporter=reporter,
                       verify_samples=target.verify.samples if target else None,
                       target_name=f"target '{target.name}'" if target else "calibrate=True")
    if precision == "int8" and target is not None and calibration is not None and prepared.to_convert.is_keras:
        from edgeprep.pipelines.convert import owned_int8

        art = owned_int8(prepared.to_convert, fmt, dataclasses.replace(target, quantize=opts["quantize"]),
                         calibration, out_path, reporter)
        if art is not None:
            return art
    with reporter.step(f"Converting to {fmt} {precision}"):
        return convert_stage(prepared.to_convert, out=out_path, calibration=calibration, **opts)



@dataclass(frozen=True)
class VerifyOutcome:
    """What ``verify`` found: the report (report.json as a dict), each artifact's metrics by its file name, and
    where the report was written (None without ``out``)."""

    report: dict[str, Any]
    metrics: dict[str, dict[str, Any]]     # "m.int8.tflite" -> {"accuracy", "agreement", "sqnr_db", ...}
    passed: bool                           # nothing failed: the CLI's exit code 0
    report_path: Optional[Path]

    @property
    def status(self) -> str:
        """The summary's status: passed, measured, unmeasured or failed."""
        return str(self.report["summary"]["status"])


def verify(model: ModelSource, artifacts: Union[PathLike, list[PathLike], tuple[PathLike, ...]], data: PathLike, *,
           target: Optional[TargetSource] = None, samples: Optional[int] = None,
           preprocess: Optional[Mapping[str, Any]] = None, out: Optional[PathLike] = None,
           progress: bool = False) -> VerifyOutcome:
    """``edgeprep verify MODEL ARTIFACTS --data DATA``: do the artifacts (.tflite, OpenVINO .xml, Core ML
    .mlpackage) compute what the float ``model`` computes? Top-1 accuracy, agreement and SQNR on ``data``'s
    evaluation split, checked against ``target``'s [gates] when given ("verified"; else "measured").

    ``samples``: the first N evaluation samples only. ``out``: also write report.json and summary.md there (only
    earlier edgeprep reports are replaced). An artifact that fails a check returns with ``passed`` False; it does
    not raise."""
    from edgeprep.pipelines.verify import verify_artifacts
    from edgeprep.progress import Reporter
    from edgeprep.report import exit_ok

    paths = _paths(artifacts, "artifacts")
    data_path = _path(data, "data")
    if data_path is None:
        raise InputError("verify needs data= (the evaluation data)", "pass a manifest (.toml), .npz, .npy or image "
                                                                     "folder")
    _positive(samples, "samples")
    profile = _target(target, None) if target is not None else None
    cli_preprocess = _preprocess(preprocess)
    with _model_path(model) as model_path:
        result = verify_artifacts(model_path, paths, data_path, profile, Reporter(quiet=not progress),
                                  out=_path(out, "out"), samples=samples, cli_preprocess=cli_preprocess)
    metrics = {Path(a["path"]).name: a.get("metrics") or {} for a in result.report["artifacts"]}
    return VerifyOutcome(result.report, metrics, exit_ok(result.report["summary"]), result.written)


def bench(artifacts: Union[PathLike, list[PathLike], tuple[PathLike, ...]], target: Optional[TargetSource] = None,
          *, data: Optional[PathLike] = None, model: Optional[PathLike] = None, runs: Optional[int] = None,
          repeats: Optional[int] = None, warmup: Optional[int] = None, threads: Optional[int] = None,
          profile: Optional[bool] = None, samples: Optional[int] = None,
          preprocess: Optional[Mapping[str, Any]] = None, out: PathLike = "runs/bench", record: bool = True,
          history: Optional[PathLike] = None, progress: bool = False) -> RunOutcome:
    """``edgeprep bench ARTIFACTS [--target TARGET]``: size, load time, latency and memory of each artifact, each
    in fresh device_bench processes on the target's device (this machine, the ARM64 emulator or an ssh device).

    ``data`` adds accuracy; ``model`` (the float model's path) adds agreement and SQNR. ``runs``, ``repeats``,
    ``warmup``, ``threads``, ``profile``: the command's options of those names (default: the target's [bench]).
    ``out``: the report directory (new, empty or an earlier edgeprep run directory). Recorded in the run history
    as the command records it, unless ``record=False``. A benchmark or gate that fails returns with ``passed``
    False; it does not raise."""
    from edgeprep.history import try_record
    from edgeprep.pipelines.bench import BenchInputs, run_bench
    from edgeprep.progress import Reporter
    from edgeprep.report import exit_ok

    paths = _paths(artifacts, "artifacts")
    for name, value in (("runs", runs), ("repeats", repeats), ("threads", threads), ("samples", samples)):
        _positive(value, name)
    if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
        raise InputError(f"warmup must be a non-negative integer, got {warmup!r}", "pass e.g. warmup=10")
    if profile is not None and not isinstance(profile, bool):
        raise InputError(f"profile= must be True, False or None, got {profile!r}", "None takes the target's [bench]")
    profile_obj = _target(target, None) if target is not None else None
    overrides = {k: v for k, v in {"runs": runs, "repeats": repeats, "warmup": warmup, "threads": threads,
                                   "profile": profile}.items() if v is not None}
    reporter = Reporter(quiet=not progress)
    result = run_bench(BenchInputs(tuple(paths), profile_obj, None, _path(data, "data"), _path(model, "model"),
                                   _preprocess(preprocess), samples, overrides), Path(out), reporter)
    recorded = None
    if record:
        recorded = try_record(result.report, result.out_dir / "report.json", _path(history, "history"),
                              warn=reporter.warn)
    artifacts_out = {f"{a['format']}-{a['precision']}": (result.out_dir / a["path"]).resolve()
                     for a in result.report["artifacts"]}
    return RunOutcome(result.out_dir.resolve(), result.report, artifacts_out, exit_ok(result.report["summary"]),
                      recorded)


# -- arguments: refused with one clear line, before any work --------------------------------------------------------

def _path(value: Any, name: str) -> Optional[Path]:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise InputError(f"{name}= must be a path (str or os.PathLike), got a {type(value).__name__}",
                         f"pass the path of the {name}" if name != "data" else
                         "save arrays with numpy.savez(path, x=images, y=labels) and pass that path")
    return Path(value)


def _paths(value: Any, name: str) -> list[Path]:
    items = [value] if isinstance(value, (str, os.PathLike)) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise InputError(f"{name}= must be a path or a non-empty list of paths, got {value!r}",
                         "pass e.g. [\"m.int8.tflite\", \"m.fp32.xml\"]")
    return [_path(v, name) for v in items]


def _positive(value: Any, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InputError(f"{name} must be a positive integer, got {value!r}", f"pass e.g. {name}=100")


def _target(target: Any, calibrate: Optional[bool]) -> TargetProfile:
    from edgeprep.commands._common import with_calibrate
    from edgeprep.targets import load_target

    if isinstance(target, TargetProfile):
        profile = target
    elif isinstance(target, (str, os.PathLike)):
        profile = load_target(target)
    else:
        raise InputError(f"target= must be a profile name, a .toml path or a TargetProfile, got a "
                         f"{type(target).__name__}", "list the profiles with 'edgeprep targets'")
    if calibrate is not None and not isinstance(calibrate, bool):
        raise InputError(f"calibrate= must be True, False or None, got {calibrate!r}",
                         "None takes the target's [calibrate] enabled")
    return with_calibrate(profile, calibrate)


def _preprocess(preprocess: Optional[Mapping[str, Any]]) -> dict:
    """A ``[preprocess]`` table, validated now (an unknown key is named), passed on as the command line's."""
    from edgeprep.data import Preprocess
    from edgeprep.errors import ConfigError

    if preprocess is None:
        return {}
    if not isinstance(preprocess, Mapping):
        raise InputError(f"preprocess= must be a mapping like the [preprocess] table, got a "
                         f"{type(preprocess).__name__}", "pass e.g. preprocess={'scale': 1/255}")
    table = dict(preprocess)
    try:
        Preprocess.from_mapping(table, "preprocess=")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"preprocess=: {exc}", "see README 'Preprocessing' for the keys") from None
    return table


def _split(split: Optional[float]) -> None:
    if split is not None and (isinstance(split, bool) or not isinstance(split, (int, float)) or not 0 < split < 1):
        raise InputError(f"split= must be a fraction between 0 and 1, got {split!r}",
                         "pass e.g. split=0.3 to hold out 30 % for evaluation")


def _model_path(model: Any) -> Any:
    """A context giving the model's path: a path as it is, a keras.Model saved to a temporary file."""
    import contextlib

    from edgeprep.models import is_keras_model, saved_model_object

    if is_keras_model(model):
        return saved_model_object(model)
    if isinstance(model, (str, os.PathLike)):
        return contextlib.nullcontext(Path(model))
    raise InputError(f"model= must be a keras.Model or a path (.keras, .h5, a SavedModel directory, .onnx), got a "
                     f"{type(model).__module__}.{type(model).__name__}",
                     "pass a keras.Model object or the path of a saved model")


__all__ = ["ModelSource", "RunOutcome", "VerifyOutcome", "bench", "convert", "quantize", "run", "verify"]
