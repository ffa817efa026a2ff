"""OpenVINO runner: IR (``.xml`` + ``.bin``), and also ``.onnx``/``.tflite`` which OpenVINO reads directly.

Options: ``device`` (default CPU), ``inference_precision`` (``f32`` default: the CPU plugin otherwise runs in bf16
on CPUs with AVX512-BF16/AMX, which changes numerics; ``default`` leaves the plugin's choice), ``performance_hint``
(LATENCY or THROUGHPUT). ``describe()`` reports the precision the compiled model actually executes in.
"""

from __future__ import annotations

import os

import numpy as np

from device_bench.runners import register
from device_bench.runners.base import (
    ArtifactError,
    Runner,
    RunnerUnavailable,
    Session,
    TensorSpec,
    summarize_profile,
)

_PRECISIONS = {"f32", "bf16", "f16", "default"}


class OpenVINOSession(Session):
    def __init__(self, path: str, threads: int | None, device: str, precision: str, hint: str):
        try:
            import openvino as ov
        except ImportError:
            raise RunnerUnavailable("openvino is not installed (pip install openvino)") from None
        core = ov.Core()
        config: dict = {"PERFORMANCE_HINT": hint}
        if precision != "default":
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            model = core.read_model(str(path))
            if len(model.inputs) != 1 or len(model.outputs) != 1:
                raise ArtifactError(f"{path}: {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                                    "one of each is supported")
            self._compiled = core.compile_model(model, device, config)
        except ArtifactError:
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line C++ messages
            raise ArtifactError(f"OpenVINO cannot load {path}: {str(exc).strip().splitlines()[0]}") from None
        self._request = self._compiled.create_infer_request()
        self._ov, self._fed = ov, None
        port_in, port_out = model.inputs[0], model.outputs[0]
        pshape = port_in.get_partial_shape()
        shape = tuple(d.get_length() if d.is_static else -1 for d in pshape)
        self.input = TensorSpec(port_in.get_any_name(), shape, port_in.get_element_type().to_dtype().name)
        oshape = tuple(d.get_length() if d.is_static else -1 for d in port_out.get_partial_shape())
        self.output = TensorSpec(port_out.get_any_name(), oshape, "float32")
        self.threads, self.device, self.requested_precision, self.hint = threads, device, precision, hint
        self.version = ov.get_version()
        self._core, self._model, self._config = core, model, config

    def _infer(self, x: np.ndarray) -> np.ndarray:
        # Point the request's input at the fed array (no copy) only when it is a new array, then run inference
        # alone, as benchmark_app does: infer({0: x}) would convert the input and copy every output per call,
        # which doubled the measured latency of a 0.2 ms model. The output is a view; Session.run copies it.
        if x is not self._fed:
            self._fed, self._fed_buffer = x, np.ascontiguousarray(x)   # both kept alive while the tensor uses them
            self._request.set_input_tensor(self._ov.Tensor(self._fed_buffer, shared_memory=True))
        self._request.infer()
        return self._request.get_output_tensor(0).data

    def last_latency_ms(self) -> float | None:
        """OpenVINO's own timing of the last inference (``InferRequest.latency``), which benchmark_app reports."""
        return float(self._request.latency)

    def execution_precision(self) -> str:
        return str(self._compiled.get_property("INFERENCE_PRECISION_HINT")).replace("<Type: '", "").rstrip("'>")

    def op_precisions(self) -> dict[str, int]:
        """How many executed nodes run in each precision (from the compiled runtime graph)."""
        counts: dict[str, int] = {}
        for op in self._compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            p = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "n/a"
            counts[p] = counts.get(p, 0) + 1
        return counts

    def profile(self, fed: np.ndarray, runs: int) -> dict:
        """OpenVINO's per-node performance counters (``PERF_COUNT``) of a second compilation with the same
        configuration, averaged over ``runs`` inferences: real time per node and per executed layer type."""
        compiled = self._core.compile_model(self._model, self.device, {**self._config, "PERF_COUNT": True})
        request = compiled.create_infer_request()
        request.set_input_tensor(self._ov.Tensor(np.ascontiguousarray(fed)))
        request.infer()                       # first inference: not counted
        nodes: dict[str, dict] = {}
        for _ in range(runs):
            request.infer()
            for info in request.profiling_info:
                if str(info.status).endswith("EXECUTED"):
                    n = nodes.setdefault(info.node_name, {"node": info.node_name, "type": info.node_type,
                                                          "exec_type": info.exec_type, "ms": 0.0})
                    n["ms"] += info.real_time.total_seconds() * 1e3 / runs
        return summarize_profile(list(nodes.values()), "OpenVINO PERF_COUNT real_time", runs)

    def describe(self) -> dict:
        return {"runtime": "openvino", "version": self.version, "device": self.device, "threads": self.threads,
                "performance_hint": self.hint, "requested_precision": self.requested_precision,
                "execution_precision": self.execution_precision(), "node_precisions": self.op_precisions(),
                "input": self.input.to_dict(), "output": self.output.to_dict()}


@register("openvino")
class OpenVINORunner(Runner):
    formats = (".xml", ".onnx", ".tflite")

    def load_runtime(self) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise RunnerUnavailable("openvino is not installed (pip install openvino)") from None
        ov.Core()

    def files(self, path: str) -> list[str]:
        bin_path = path[:-4] + ".bin" if path.endswith(".xml") else None
        return [path] + ([bin_path] if bin_path and os.path.exists(bin_path) else [])

    def open(self, path: str, threads: int | None = None, options: dict | None = None) -> Session:
        opts = dict(options or {})
        device = str(opts.pop("device", "CPU"))
        precision = str(opts.pop("inference_precision", "f32"))
        hint = str(opts.pop("performance_hint", "LATENCY")).upper()
        if hint not in ("LATENCY", "THROUGHPUT"):
            raise ValueError(f"performance_hint must be LATENCY or THROUGHPUT, got {hint!r}")
        if opts:
            raise ValueError(f"unknown OpenVINO option(s): {', '.join(opts)} "
                             "(known: device, inference_precision, performance_hint)")
        if precision not in _PRECISIONS:
            raise ValueError(f"inference_precision must be one of {', '.join(sorted(_PRECISIONS))}")
        return OpenVINOSession(path, threads, device, precision, hint)
