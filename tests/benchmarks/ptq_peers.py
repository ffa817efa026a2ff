"""Peer int8 quantizers, measured side by side with edgeprep's own: one model, one data set, one yardstick.

A library for benchmarks (not a test), and a script:

    .venv/bin/python tests/benchmarks/ptq_peers.py [MODEL] [MANIFEST] [--only NAME,...] [--aimet-iterations N]

Every tool quantizes the same float Keras classifier from the same calibration samples (the first 500 of the
manifest's calibration set, edgeprep's default ``calibration_samples``), and every artifact is measured the same way
on the whole evaluation set against the float Keras model's outputs:

- agreement, SQNR (dB), top-1: ``device_bench.metrics`` (what ``edgeprep verify`` reports): agreement is the
  fraction of samples whose argmax equals the float model's; SQNR is ``10 log10(sum(ref^2) / sum((ref - q)^2))``
  over the output probabilities of all samples; drop = (float top-1 - top-1) x 100 points;
- integer inputs/outputs are quantized/dequantized with the tensor's scale and zero point (``device_bench``
  sessions: round half away from zero, as TFLite's kernels);
- latency: the median of 50 single-sample invocations (wall time of the runtime call alone, input already in the
  artifact's dtype) after 10 warm-up calls, one thread: LiteRT ``Interpreter(num_threads=1)`` with its default
  XNNPACK delegate, OpenVINO CPU with ``INFERENCE_PRECISION_HINT f32``, ``NUM_STREAMS 1``, ``INFERENCE_NUM_THREADS
  1``, ONNX Runtime CPU with ``intra_op_num_threads 1``;
- size: the artifact's bytes on disk (OpenVINO: .xml + .bin);
- seconds: wall time of the tool's quantization call(s) from the float model it takes (Keras for TFLiteConverter
  and edgeprep, the float .tflite for litert-quantizer, the ``ov.Model`` for NNCF, the float ONNX for ONNX Runtime
  and AIMET); the shared float conversions are timed once and printed above the table.

Peers (``PEERS``): TFLiteConverter (int8, 16x8), litert-quantizer (static_wi8_ai8, static_wi8_ai16), NNCF (default,
accurate bias correction), ONNX Runtime ``quantize_static`` (QDQ, per-channel, Percentile and MinMax), AIMET-ONNX
(CLE + AdaRound, W8A8 and W8A16; it runs in ``.venv-peers`` through ``peer_aimet.py``). ``edgeprep`` rows are
edgeprep's convert stage with the litert-cpu / openvino-cpu target options and the default ``[quantize.ptq] engine
= "vendor"`` (the converters' PTQ as edgeprep drives them; ``bench_ptq.py`` adds edgeprep's own PTQ) and ``float``
rows the fp32 artifacts, for latency and size. A peer that cannot install or run gives a row
printed as ``skipped: <reason>``, never nothing.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for _p in (str(HERE), str(HERE.parent), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from conftest import EXAMPLE_MODEL, MANIFEST  # noqa: E402

from device_bench.runners.base import Session, TensorSpec  # noqa: E402

CALIBRATION_SAMPLES = 500       # edgeprep's default [quantize] calibration_samples
LATENCY_RUNS = 50
LATENCY_WARMUP = 10
AIMET_ITERATIONS = 1000         # AdaRound steps per layer (AIMET recommends 10k; 1k keeps the run minutes long)
AIMET_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
AIMET_TIMEOUT = 3600
ONNX_OPSET = 17


@dataclass
class Row:
    """One quantized artifact measured on the evaluation set against the float Keras model."""

    tool: str
    mode: str
    fmt: str
    agreement: float
    sqnr_db: float
    top1: float
    drop_pts: float
    size_bytes: int
    latency_ms: float
    seconds: float              # quantization wall time
    note: str = ""

    @property
    def skipped(self) -> bool:
        return self.note.startswith("skipped:")


def skipped(tool: str, mode: str, fmt: str, reason: str) -> Row:
    nan = float("nan")
    return Row(tool, mode, fmt, nan, nan, nan, nan, 0, nan, nan, f"skipped: {reason}")


# ---- measurement -------------------------------------------------------------------------------------------

def _latency_ms(session, sample: np.ndarray) -> float:
    from device_bench.measure import time_calls

    fed = session.feed(sample)
    timing = time_calls(lambda: session.invoke(fed), runs=LATENCY_RUNS, warmup=LATENCY_WARMUP)
    return float(np.median(timing.samples_ms))


def _measure(session, eval_x: np.ndarray, ref_out: np.ndarray, eval_y: np.ndarray | None):
    from device_bench import metrics

    out = session.run(eval_x)
    agreement = metrics.agreement(out, ref_out)
    sqnr = metrics.sqnr_db(ref_out, out)
    top1 = metrics.accuracy(out, eval_y) if eval_y is not None else float("nan")
    return agreement, sqnr, top1, _latency_ms(session, eval_x[:1])


def measure_tflite(path, eval_x, ref_out, eval_y):
    """(agreement, SQNR dB, top-1, latency ms) of a .tflite in LiteRT, 1 thread, XNNPACK (the default delegate)."""
    from device_bench.runners import open_model

    return _measure(open_model("litert", str(path), 1, {"xnnpack": True}), eval_x, ref_out, eval_y)


def measure_onnx(path, eval_x, ref_out, eval_y):
    """(agreement, SQNR dB, top-1, latency ms) of an .onnx in ONNX Runtime (CPU provider), intra-op threads 1."""
    from device_bench.runners import open_model

    return _measure(open_model("onnxruntime", str(path), 1), eval_x, ref_out, eval_y)


class _OpenVINOSession(Session):
    """OpenVINO CPU, compiled with exactly the benchmark's settings (f32 precision, one stream, one thread)."""

    CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": 1}

    def __init__(self, path):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        self._ov = ov
        self._compiled = core.compile_model(model, "CPU", dict(self.CONFIG))
        self._request = self._compiled.create_infer_request()
        self._fed = self._buffer = None
        shape = tuple(d.get_length() if d.is_static else -1 for d in model.inputs[0].get_partial_shape())
        self.input = TensorSpec(model.inputs[0].get_any_name(), shape, "float32")
        self.output = TensorSpec(model.outputs[0].get_any_name(), (), "float32")

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if x is not self._fed:      # share the fed array (no copy per call), as device_bench's runner does
            self._fed, self._buffer = x, np.ascontiguousarray(x)
            self._request.set_input_tensor(self._ov.Tensor(self._buffer, shared_memory=True))
        self._request.infer()
        return self._request.get_output_tensor(0).data.copy()


def measure_openvino(path, eval_x, ref_out, eval_y):
    """(agreement, SQNR dB, top-1, latency ms) of an OpenVINO IR on CPU: f32 precision, 1 stream, 1 thread."""
    return _measure(_OpenVINOSession(path), eval_x, ref_out, eval_y)


MEASURE = {"tflite": measure_tflite, "openvino": measure_openvino, "onnx": measure_onnx}


def size_of(path: Path) -> int:
    path = Path(path)
    extra = [path.with_suffix(".bin")] if path.suffix == ".xml" else []
    return sum(p.stat().st_size for p in [path, *extra] if p.exists())


# ---- shared inputs: the float model in each form the tools take -------------------------------------------

@dataclass
class Context:
    """The float model, the data and the float conversions the peers share (each made once, on first use)."""

    model_path: Path
    calib_x: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray | None
    workdir: Path
    aimet_iterations: int = AIMET_ITERATIONS
    prep_seconds: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict)

    def _once(self, key: str, make: Callable):
        if key not in self._cache:
            start = time.perf_counter()
            self._cache[key] = make()
            self.prep_seconds[key] = time.perf_counter() - start
        return self._cache[key]

    @property
    def handle(self):
        from edgeprep.models import load_model

        return self._once("load Keras model", lambda: load_model(self.model_path))

    @property
    def keras(self):
        return self.handle.obj

    @property
    def ref_out(self) -> np.ndarray:
        return self._once("float reference", lambda: self.handle.predict(self.eval_x, 256))

    @property
    def float_tflite(self) -> Path:
        def make():
            import tensorflow as tf

            from edgeprep._util import quiet

            with quiet():
                flat = tf.lite.TFLiteConverter.from_keras_model(self.keras).convert()
            path = self.workdir / "float.fp32.tflite"
            path.write_bytes(flat)
            return path
        return self._once("Keras -> float .tflite", make)

    @property
    def ov_model(self):
        def make():
            from edgeprep._util import quiet
            from edgeprep.backends.openvino.backend import to_ov_model

            with quiet():
                return to_ov_model(self.handle, self.workdir)
        return self._once("Keras -> SavedModel -> ov.Model (batch 1)", make)

    def onnx(self, batch: int | None) -> Path:
        def make():
            import tensorflow as tf
            import tf2onnx

            from edgeprep._util import quiet

            path = self.workdir / f"float.{'b1' if batch else 'dynamic'}.onnx"
            spec = (tf.TensorSpec((batch, *self.handle.input_shape), tf.float32, name=self.handle.input_name),)
            with quiet():
                tf2onnx.convert.from_keras(self.keras, input_signature=spec, opset=ONNX_OPSET,
                                           output_path=str(path))
            return path
        return self._once(f"tf2onnx export (opset {ONNX_OPSET}, batch {batch or 'dynamic'})", make)


@dataclass
class Task:
    """One artifact a peer makes: ``build()`` returns (path, quantization seconds, note)."""

    mode: str
    fmt: str
    build: Callable[[], tuple[Path, float, str]]


def _timed(fn: Callable[[], Path]) -> tuple[Path, float]:
    from edgeprep._util import quiet

    start = time.perf_counter()
    with quiet():
        path = fn()
    return path, time.perf_counter() - start


# ---- the peers ----------------------------------------------------------------------------------------------

def peer_float(ctx: Context) -> list[Task]:
    """The fp32 artifacts (no quantization): the latency and size each runtime starts from."""
    def tflite():
        return ctx.float_tflite, ctx.prep_seconds["Keras -> float .tflite"], "Keras -> float .tflite conversion"

    def openvino():
        import openvino as ov

        path = ctx.workdir / "float.fp32.xml"
        ov.save_model(ctx.ov_model, str(path), compress_to_fp16=False)
        return path, ctx.prep_seconds["Keras -> SavedModel -> ov.Model (batch 1)"], "ov.convert_model of a SavedModel"

    def onnx():
        path = ctx.onnx(1)
        return path, ctx.prep_seconds[f"tf2onnx export (opset {ONNX_OPSET}, batch 1)"], "tf2onnx.convert.from_keras"

    return [Task("fp32", "tflite", tflite), Task("fp32", "openvino", openvino), Task("fp32", "onnx", onnx)]


def peer_edgeprep(ctx: Context) -> list[Task]:
    """edgeprep's convert stage with each target's options and the vendor engine, calibrated on the same samples."""
    from edgeprep.data import Dataset
    from edgeprep.stages.convert import convert, target_options
    from edgeprep.targets import load_target

    x = ctx.calib_x
    data = Dataset(source="calibration samples (preprocessed)", count=len(x), read=lambda idx: x[idx])

    def make(target: str, fmt: str, out: str):
        def build():
            opts = target_options(load_target(target), fmt, "int8")
            opts["calibration_samples"] = len(x)
            (ctx.workdir / f"edgeprep-{fmt}").mkdir(exist_ok=True)
            start = time.perf_counter()
            art = convert(ctx.handle, out=ctx.workdir / out, calibration=data, workdir=ctx.workdir / f"edgeprep-{fmt}",
                          **opts)
            q = art.quantization
            note = f"{target}: {q.get('method') or q.get('weights', '')}, range {q.get('range_method', '?')}"
            if fmt == "tflite":
                note += f", io {q.get('io')}"
            return art.path, time.perf_counter() - start, note + "; convert stage (no keep-float search)"
        return build

    return [Task("vendor engine (litert-cpu)", "tflite", make("litert-cpu", "tflite", "edgeprep.int8.tflite")),
            Task("vendor engine (openvino-cpu)", "openvino", make("openvino-cpu", "openvino", "edgeprep.int8.xml"))]


def peer_tfliteconverter(ctx: Context) -> list[Task]:
    """``tf.lite.TFLiteConverter``: plain full-integer PTQ (Optimize.DEFAULT + representative dataset)."""
    import tensorflow as tf

    def representative():
        for i in range(len(ctx.calib_x)):
            yield [ctx.calib_x[i:i + 1]]

    def make(name: str, ops, io):
        def build():
            def convert():
                conv = tf.lite.TFLiteConverter.from_keras_model(ctx.keras)
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
                conv.representative_dataset = representative
                conv.target_spec.supported_ops = [ops]
                conv.inference_input_type = conv.inference_output_type = io
                path = ctx.workdir / f"tfliteconverter.{name}.tflite"
                path.write_bytes(conv.convert())
                return path
            path, seconds = _timed(convert)
            return path, seconds, f"{io.name} I/O"
        return build

    return [Task("int8 (default)", "tflite", make("int8", tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.int8)),
            Task("int16 act (16x8)", "tflite",
                 make("16x8", tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8, tf.int16))]


def peer_litert_quantizer(ctx: Context) -> list[Task]:
    """litert-quantizer (formerly ai-edge-quantizer; import name ``litert_quantizer``): a recipe applied to the
    float .tflite, calibrated on the samples (``Quantizer.calibrate``), then ``Quantizer.quantize``."""
    try:
        from litert_quantizer import quantizer, recipe
    except ImportError:
        raise RuntimeError("litert-quantizer is not installed (pip install litert-quantizer==0.11.0)") from None
    from ai_edge_litert.interpreter import Interpreter

    def make(name: str):
        def build():
            flat = ctx.float_tflite.read_bytes()
            sig = Interpreter(model_content=flat).get_signature_list()
            key = next(iter(sig))
            inp = sig[key]["inputs"][0]

            def run():
                qt = quantizer.Quantizer(flat)
                qt.load_quantization_recipe(getattr(recipe, name)())
                samples = [{inp: ctx.calib_x[i:i + 1]} for i in range(len(ctx.calib_x))]
                cal = qt.calibrate({key: samples}, num_threads=2)
                result = qt.quantize(cal, enable_progress_report=False)
                path = ctx.workdir / f"litert_quantizer.{name}.tflite"
                path.write_bytes(bytes(result.quantized_model))
                return path
            path, seconds = _timed(run)
            it = Interpreter(model_path=str(path))
            io = np.dtype(it.get_input_details()[0]["dtype"]).name
            ops: dict[str, int] = {}
            for op in it._get_ops_details():
                ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
            boundary = {k: v for k, v in ops.items() if k in ("QUANTIZE", "DEQUANTIZE")}
            note = f"recipe.{name}(), {io} I/O" + (f", {boundary}" if boundary else "")
            return path, seconds, note
        return build

    return [Task("static_wi8_ai8", "tflite", make("static_wi8_ai8")),
            Task("static_wi8_ai16", "tflite", make("static_wi8_ai16"))]


def peer_nncf(ctx: Context) -> list[Task]:
    """NNCF PTQ of the OpenVINO model (``nncf.quantize``, its defaults, subset_size = the calibration samples)."""
    import nncf
    import openvino as ov

    def make(name: str, fast: bool):
        def build():
            samples = [ctx.calib_x[i:i + 1] for i in range(len(ctx.calib_x))]
            model = ctx.ov_model.clone()

            def run():
                q = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples),
                                  fast_bias_correction=fast)
                path = ctx.workdir / f"nncf.{name}.xml"
                ov.save_model(q, str(path), compress_to_fp16=False)
                return path
            path, seconds = _timed(run)
            return path, seconds, f"nncf {nncf.__version__}, preset default (performance), fast_bias_correction={fast}"
        return build

    return [Task("int8 (default)", "openvino", make("default", True)),
            Task("int8 fast_bias_correction=False", "openvino", make("accurate_bc", False))]


def peer_ort(ctx: Context) -> list[Task]:
    """ONNX Runtime ``quantize_static`` of the tf2onnx export: QDQ, per-channel, QInt8 activations and weights."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, name: str):
            self.it = ({name: ctx.calib_x[i:i + 1]} for i in range(len(ctx.calib_x)))

        def get_next(self):
            return next(self.it, None)

    def make(method):
        def build():
            src = ctx.onnx(1)
            pre = ctx.workdir / "float.b1.pre.onnx"
            note = ""
            if not pre.exists():
                try:
                    from edgeprep._util import quiet

                    with quiet():
                        quant_pre_process(str(src), str(pre))
                except Exception as exc:       # pre-processing is advised, not required: quantize without it
                    note = f"quant_pre_process failed ({str(exc).splitlines()[0][:80]}), raw export used; "
                    pre = src
            import onnx

            name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
            out = ctx.workdir / f"ort.{method.name.lower()}.onnx"

            def run():
                quantize_static(str(pre), str(out), Reader(name), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                calibrate_method=method)
                return out
            path, seconds = _timed(run)
            import onnxruntime

            return path, seconds, note + f"onnxruntime {onnxruntime.__version__}, S8S8 QDQ, opset {ONNX_OPSET}, batch 1"
        return build

    return [Task("QDQ per-channel, Percentile", "onnx", make(CalibrationMethod.Percentile)),
            Task("QDQ per-channel, MinMax", "onnx", make(CalibrationMethod.MinMax))]


def peer_aimet(ctx: Context) -> list[Task]:
    """AIMET-ONNX: CLE + AdaRound, W8A8 and W8A16, run by ``peer_aimet.py`` in ``.venv-peers``; the exported QDQ
    ONNX is measured in ONNX Runtime here, and the note gives the agreement of AIMET's own sim session with it."""
    if not AIMET_PYTHON.exists():
        raise RuntimeError(f"no {AIMET_PYTHON.relative_to(ROOT)} (make peers)")
    state: dict = {}

    def run_once() -> dict:
        if "results" in state:
            return state["results"]
        out = ctx.workdir / "aimet"
        out.mkdir(exist_ok=True)
        np.save(out / "calib.npy", ctx.calib_x)
        np.save(out / "eval.npy", ctx.eval_x)
        model = ctx.onnx(None)     # dynamic batch: AdaRound and calibration take batches of 32
        cmd = [str(AIMET_PYTHON), str(HERE / "peer_aimet.py"), "--model", str(model), "--calib",
               str(out / "calib.npy"), "--eval", str(out / "eval.npy"), "--out", str(out), "--modes", "w8a8,w8a16",
               "--iterations", str(ctx.aimet_iterations)]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2"}
        start = time.perf_counter()
        with open(out / "log.txt", "w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=AIMET_TIMEOUT)
        state["wall"] = time.perf_counter() - start
        results_file = out / "results.json"
        if proc.returncode or not results_file.exists():
            tail = (out / "log.txt").read_text().strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"peer_aimet.py exited {proc.returncode}: {tail[0][:200]} (log {out / 'log.txt'})")
        state["results"] = json.loads(results_file.read_text())
        return state["results"]

    def make(mode: str):
        def build():
            r = run_once().get(mode, {"error": "not run"})
            if "error" in r:
                raise RuntimeError(r["error"])
            from device_bench import metrics

            note = (f"aimet-onnx {r['aimet_onnx']}, AdaRound {r['iterations']} it x batch {r['batch']} "
                    f"({r['adaround_seconds']:.0f} s), CLE {r['cle_seconds']:.1f} s; ORT on to_onnx_qdq export "
                    f"(dynamic batch); subprocess {state['wall']:.0f} s for both modes")
            sim = Path(r["path"]).with_suffix(".sim.npy")
            if sim.exists():
                s = np.load(sim)
                note += f"; sim session: agreement {metrics.agreement(s, ctx.ref_out):.4f}, SQNR " \
                        f"{metrics.sqnr_db(ctx.ref_out, s):.1f} dB"
            return Path(r["path"]), float(r["seconds"]), note
        return build

    return [Task("CLE + AdaRound W8A8", "onnx", make("w8a8")),
            Task("CLE + AdaRound W8A16", "onnx", make("w8a16"))]


PEERS: dict[str, Callable[[Context], list[Task]]] = {
    "float": peer_float,
    "edgeprep": peer_edgeprep,
    "TFLiteConverter": peer_tfliteconverter,
    "litert-quantizer": peer_litert_quantizer,
    "NNCF": peer_nncf,
    "ONNX Runtime": peer_ort,
    "AIMET": peer_aimet,
}
FORMAT_OF = {"float": "-", "edgeprep": "-", "TFLiteConverter": "tflite", "litert-quantizer": "tflite",
             "NNCF": "openvino", "ONNX Runtime": "onnx", "AIMET": "onnx"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:240]


def _wanted(only: set[str] | None) -> list[str]:
    if not only:
        return list(PEERS)
    keys = {k.lower().replace(" ", "").replace("-", ""): k for k in PEERS}
    norm = {o.lower().replace(" ", "").replace("-", "") for o in only}
    unknown = norm - keys.keys()
    if unknown:
        raise ValueError(f"unknown peer(s): {', '.join(sorted(unknown))}; known: {', '.join(PEERS)}")
    return [keys[n] for n in keys if n in norm]


def run_peers(ctx: Context, only: set[str] | None = None, log: Callable[[str], None] | None = None) -> list[Row]:
    """Every wanted peer's artifacts, built and measured; failures become ``skipped`` rows."""
    rows: list[Row] = []
    ref = ctx.ref_out
    float_top1 = _top1(ref, ctx.eval_y)
    for tool in _wanted(only):
        start = time.perf_counter()
        try:
            tasks = PEERS[tool](ctx)
        except Exception as exc:
            rows.append(skipped(tool, "-", FORMAT_OF[tool], _first_line(exc)))
            _say(log, f"{tool}: skipped: {_first_line(exc)}")
            continue
        for task in tasks:
            t0 = time.perf_counter()
            try:
                path, seconds, note = task.build()
            except Exception as exc:
                rows.append(skipped(tool, task.mode, task.fmt, _first_line(exc)))
                _say(log, f"{tool} / {task.mode}: skipped: {_first_line(exc)}")
                continue
            try:
                agreement, sqnr, top1, latency = MEASURE[task.fmt](path, ctx.eval_x, ref, ctx.eval_y)
            except Exception as exc:
                rows.append(skipped(tool, task.mode, task.fmt, f"built {Path(path).name} but it did not run: "
                                                                f"{_first_line(exc)}"))
                _say(log, f"{tool} / {task.mode}: measurement failed: {_first_line(exc)}")
                continue
            drop = (float_top1 - top1) * 100.0
            rows.append(Row(tool, task.mode, task.fmt, agreement, sqnr, top1, drop, size_of(path), latency, seconds,
                            note))
            _say(log, f"{tool} / {task.mode}: built in {seconds:.1f} s, measured ({time.perf_counter() - t0:.0f} s "
                      f"in all)")
        _say(log, f"--- {tool}: {time.perf_counter() - start:.0f} s wall")
    return rows


def _say(log, message: str) -> None:
    if log:
        log(message)


def _top1(outputs: np.ndarray, labels: np.ndarray | None) -> float:
    from device_bench import metrics

    return metrics.accuracy(outputs, labels) if labels is not None else float("nan")


def peers(model_path: Path, calib_x: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray, workdir: Path,
          only: set[str] | None = None) -> list[Row]:
    """Quantize ``model_path`` with every peer (or those in ``only``: names of ``PEERS``, case and dashes ignored)
    from ``calib_x`` and measure each artifact on ``eval_x``/``eval_y`` against the float Keras model.
    ``calib_x``/``eval_x`` are preprocessed float32 NHWC model inputs; artifacts are written under ``workdir``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(Path(model_path), np.ascontiguousarray(calib_x, np.float32),
                  np.ascontiguousarray(eval_x, np.float32), eval_y, workdir)
    return run_peers(ctx, only)


def load_inputs(manifest: Path, calibration_samples: int = CALIBRATION_SAMPLES):
    """(calib_x, eval_x, eval_y) from a data manifest with edgeprep's loader: the first ``calibration_samples`` of
    the calibration set (what edgeprep calibrates on) and the whole evaluation set, preprocessed."""
    from edgeprep.data import load_data

    spec = load_data(manifest)
    calib_x, _ = spec.calibration.arrays(calibration_samples)
    eval_x, eval_y = spec.evaluation.arrays()
    return calib_x, eval_x, eval_y


# ---- the table ----------------------------------------------------------------------------------------------

def _f(v: float, spec: str, width: int) -> str:
    return ("-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)).rjust(width)


def print_table(rows: list[Row], float_top1: float) -> None:
    print(f"float Keras top-1 {float_top1:.4f}; agreement and SQNR against its outputs")
    head = (f"{'tool':<17}{'mode':<33}{'format':<9}{'agreement':>10}{'SQNR dB':>9}{'top-1':>8}{'drop pts':>9}"
            f"{'size KiB':>10}{'latency ms':>11}{'quant s':>9}")
    print(head)
    print("-" * len(head))
    notes = []
    for r in rows:
        lead = f"{r.tool[:16]:<17}{r.mode[:32]:<33}{r.fmt:<9}"
        if r.skipped:
            print(lead + r.note)
            continue
        print(lead + _f(r.agreement, ".4f", 10) + _f(r.sqnr_db, ".1f", 9) + _f(r.top1, ".4f", 8)
              + _f(r.drop_pts, "+.2f", 9) + _f(r.size_bytes / 1024, ",.0f", 10) + _f(r.latency_ms, ".3f", 11)
              + _f(r.seconds, ".1f", 9))
        if r.note:
            notes.append(f"  {r.tool} / {r.mode} / {r.fmt}: {r.note}")
    if notes:
        print("notes:")
        print("\n".join(notes))


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Peer int8 quantizers vs edgeprep on one model, measured alike.")
    ap.add_argument("model", nargs="?", type=Path, default=EXAMPLE_MODEL)
    ap.add_argument("manifest", nargs="?", type=Path, default=MANIFEST)
    ap.add_argument("--only", default="", help=f"comma-separated peers (default all): {', '.join(PEERS)}")
    ap.add_argument("--calibration-samples", type=int, default=CALIBRATION_SAMPLES)
    ap.add_argument("--aimet-iterations", type=int, default=AIMET_ITERATIONS)
    ap.add_argument("--workdir", type=Path, help="keep the artifacts here (default: a temporary directory)")
    args = ap.parse_args(argv)
    only = {o.strip() for o in args.only.split(",") if o.strip()} or None
    try:
        _wanted(only)
    except ValueError as exc:
        print(exc)
        return 2
    start = time.perf_counter()
    calib_x, eval_x, eval_y = load_inputs(args.manifest, args.calibration_samples)
    with tempfile.TemporaryDirectory(prefix="ptq-peers-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = Context(args.model.resolve(), calib_x, eval_x, eval_y, workdir, aimet_iterations=args.aimet_iterations)
        print(f"model {args.model}; data {args.manifest}: {len(calib_x)} calibration samples, {len(eval_x)} "
              f"evaluation samples, input {tuple(eval_x.shape[1:])}", flush=True)
        rows = run_peers(ctx, only, log=lambda m: print(m, file=sys.stderr, flush=True))
        print("\nshared float preparation (not in 'quant s'): "
              + "; ".join(f"{k} {v:.1f} s" for k, v in ctx.prep_seconds.items()))
        print()
        print_table(rows, _top1(ctx.ref_out, eval_y))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 1 if any(r.skipped for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
