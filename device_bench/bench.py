"""One benchmark of one artifact, in this process: what ``python -m device_bench`` runs on the device.

The order is fixed so every figure means the same on every runtime:

1. import the runtime (no model) and read the peak RSS: the runtime-alone memory baseline;
2. load/compile the artifact (``load_ms``);
3. one first inference, ``warmup`` more, then ``runs`` iterations or ``min_seconds``, whichever is longer, on a
   deterministic random input already in the artifact's dtype. Each iteration is timed with ``perf_counter``
   around ``invoke`` (``timer: "wall"``), or, where the runtime times its own inferences (OpenVINO's
   ``InferRequest.latency``, what benchmark_app reports), by the runtime (``timer: "runtime"``; the wall times are
   then in ``wall_latency_ms``);
4. read the peak RSS again (before any evaluation data is loaded): ``peak_rss_bytes`` and its delta over 1;
5. with ``profile``, where one inference's time goes per op type, from the runtime's own per-node counters
   (``Session.profile``: OpenVINO's PERF_COUNT; LiteRT's Python API has none, its ``delegation`` says which ops
   XNNPACK did not take);
6. with ``data``, run the evaluation set for accuracy, agreement and SQNR.

With ``versus`` (a second artifact for the same runtime) both are loaded and their iterations alternate (A B B A,
...) in the one loop of 3: the ratio of their latencies is then measured on the same machine state — frequency,
placement, neighbours — which between separate processes differs by more than most regressions
(``edgeprep gate --rebench``). Both sessions share caches while they alternate, so the latencies are each model's
under that sharing; the ratio is what is judged.

The host side (``device_bench.harness``) runs this in a fresh process through a transport, so no two benchmarks
share caches, allocators or thread pools.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from device_bench import __version__, device, measure, metrics

SUFFIX_RUNTIMES = {".tflite": "litert", ".xml": "openvino", ".onnx": "onnxruntime"}


@dataclass(frozen=True)
class Job:
    """What to benchmark and how. Paths are as seen by the process that runs it."""

    artifact: str
    runtime: str
    threads: int | None = None
    options: dict = field(default_factory=dict)
    runs: int = 50
    warmup: int = 5
    min_seconds: float = 0.0
    data: str | None = None
    seed: int = 0
    versus: str | None = None     # a second artifact, same runtime: timed alternately in this process (``run``)
    profile: bool = False         # per-op times from the runtime's counters, after the timed loop

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise ValueError("runs must be >= 1")
        if self.warmup < 0 or self.min_seconds < 0:
            raise ValueError("warmup and min_seconds must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")

    def argv(self, path=str) -> list[str]:
        """Command-line arguments of ``python -m device_bench`` for this job; ``path`` maps local paths to the
        paths the device sees (a transport that copies files supplies it)."""
        args = [path(self.artifact), "--runtime", self.runtime, "--runs", str(self.runs),
                "--warmup", str(self.warmup), "--min-time", repr(self.min_seconds), "--seed", str(self.seed)]
        if self.threads:
            args += ["--threads", str(self.threads)]
        if self.options:
            args += ["--options", json.dumps(self.options, sort_keys=True)]
        if self.data:
            args += ["--data", path(self.data)]
        if self.versus:
            args += ["--versus", path(self.versus)]
        if self.profile:
            args += ["--profile"]
        return args

    def to_dict(self) -> dict:
        return asdict(self)


def runtime_for(path: str) -> str | None:
    """The runner that executes a file by its suffix, or None."""
    return SUFFIX_RUNTIMES.get(os.path.splitext(path.rstrip("/"))[1])


def run(job: Job) -> dict:
    """Benchmark ``job`` in this process and return the JSON-ready result (see the module docstring)."""
    from device_bench.runners import Session, get_runner

    runner = get_runner(job.runtime)()
    runner.load_runtime()
    runtime_rss, rss_source = measure.peak_rss_bytes()
    files = runner.files(job.artifact)
    size = sum(os.path.getsize(f) for f in files) if all(os.path.isfile(f) for f in files) else None
    start = time.perf_counter()
    session = runner.open(job.artifact, threads=job.threads, options=dict(job.options))
    load_ms = (time.perf_counter() - start) * 1e3
    x = measure.sample_input((1, *session.input.shape[1:]), job.seed)
    fed = session.feed(x)
    own = session.last_latency_ms if type(session).last_latency_ms is not Session.last_latency_ms else None
    versus = None
    if job.versus:     # both in one process, iterations alternating: the machine's state is common to both
        other = runner.open(job.versus, threads=job.threads, options=dict(job.options))
        other_fed = other.feed(measure.sample_input((1, *other.input.shape[1:]), job.seed))
        other_own = other.last_latency_ms if own else None
        timing, versus = measure.time_pair((lambda: session.invoke(fed), own),
                                           (lambda: other.invoke(other_fed), other_own), runs=job.runs,
                                           warmup=job.warmup, min_seconds=job.min_seconds)
    else:
        timing = measure.time_calls(lambda: session.invoke(fed), runs=job.runs, warmup=job.warmup,
                                    min_seconds=job.min_seconds, own=own)
    peak_rss, _ = measure.peak_rss_bytes()
    result = {
        "device_bench": __version__,
        "job": job.to_dict(),
        "artifact": {"path": job.artifact, "files": files, "size_bytes": size},
        "runtime": session.describe(),
        "device": device.info(),
        "bench": {
            "runner": job.runtime, "threads": job.threads, "options": dict(job.options),
            "load_ms": round(load_ms, 3), "first_inference_ms": round(timing.first_ms, 4),
            "warmup": len(timing.warmup_ms), "iterations": timing.iterations, "min_seconds": job.min_seconds,
            "measured_seconds": round(timing.seconds, 4), "throughput_ips": round(timing.throughput, 3),
            "latency_ms": measure.latency_stats(timing.samples_ms),
            "timer": "runtime" if timing.wall_ms else "wall",
            "peak_rss_bytes": peak_rss, "runtime_rss_bytes": runtime_rss,
            "rss_delta_bytes": peak_rss - runtime_rss, "rss_source": rss_source,
            "input": f"random uniform [0, 1) float32, seed {job.seed}, batch 1",
            "cpus": measure.cpu_count(),
        },
        "latencies_ms": [round(v, 5) for v in timing.samples_ms],
        "metrics": None,
    }
    if timing.wall_ms:
        result["bench"]["wall_latency_ms"] = measure.latency_stats(timing.wall_ms)
    if job.profile:      # after the peak RSS was read: a profiling compilation must not count as the model's
        result["profile"] = session.profile(fed, runs=min(job.runs, 50))
    if versus is not None:
        result["versus"] = {"artifact": job.versus, "latency_ms": measure.latency_stats(versus.samples_ms),
                            "latencies_ms": [round(v, 5) for v in versus.samples_ms],
                            "order": "A B B A, repeated (A = the artifact, B = versus)"}
    if job.data:
        result["metrics"] = evaluate(session, job.data)
    return result


def evaluate(session, data_path: str) -> dict:
    """Accuracy (labels ``y``), agreement and SQNR (reference outputs ``ref``) on an ``.npz`` with inputs ``x``."""
    with np.load(data_path) as z:
        if "x" not in z.files:
            raise KeyError(f"{data_path} has no 'x' array (preprocessed float inputs)")
        x = z["x"].astype(np.float32)
        y = z["y"] if "y" in z.files else None
        ref = z["ref"] if "ref" in z.files else None
    return metrics.compare(session.run(x), ref, y)
