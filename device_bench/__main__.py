"""``python -m device_bench ARTIFACT [--runtime R] [--data x.npz] ...``: benchmark one artifact, print JSON.

Runs on a device that has only Python, numpy, one runtime, this package, the artifact and (optionally) the data:
model size, load time, first inference, latency statistics over the timed iterations, throughput, peak RSS and its
delta over the runtime alone, and accuracy / agreement / SQNR when ``--data`` is given. The JSON goes to stdout;
an error is one line on stderr and exit code 2. The raw per-iteration latencies are in ``latencies_ms``.
"""

from __future__ import annotations

import argparse
import json
import sys


def _options(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--options must be a JSON object ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--options must be a JSON object, e.g. '{\"xnnpack\": false}'")
    return value


def parser() -> argparse.ArgumentParser:
    from device_bench.runners import names

    ap = argparse.ArgumentParser(prog="device_bench", description=__doc__.splitlines()[0],
                                 epilog="Runner options: litert {xnnpack: bool}; openvino {device, "
                                        "inference_precision: f32|bf16|f16|default, performance_hint: "
                                        "LATENCY|THROUGHPUT}; coreml (macOS) {compute_units: "
                                        "ALL|CPU_ONLY|CPU_AND_GPU|CPU_AND_NE}; onnxruntime none.")
    ap.add_argument("artifact", help=".tflite, OpenVINO .xml (with its .bin), .onnx file or Core ML .mlpackage")
    ap.add_argument("--runtime", choices=names(), help="runner (default: from the file suffix)")
    ap.add_argument("--data", help=".npz with preprocessed float inputs 'x' and optional labels 'y' and reference "
                                   "outputs 'ref' (for accuracy, agreement and SQNR)")
    ap.add_argument("--threads", type=int, help="runtime threads (default: the runtime's own choice)")
    ap.add_argument("--runs", type=int, default=50, help="timed iterations (at least; default 50)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed iterations after the first (default 5)")
    ap.add_argument("--min-time", type=float, default=0.0, metavar="SECONDS",
                    help="keep iterating until this much measured time has passed (default 0)")
    ap.add_argument("--options", type=_options, default={}, metavar="JSON", help="runner options as a JSON object")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random timing input (default 0)")
    ap.add_argument("--profile", action="store_true", help="also record per-op times from the runtime's own "
                                                            "counters, after the timed loop (OpenVINO)")
    ap.add_argument("--versus", metavar="ARTIFACT", help="a second artifact for the same runtime, timed in the "
                                                         "same loop, iterations alternating (its latencies are in "
                                                         "'versus')")
    return ap


def main(argv: list[str] | None = None) -> int:
    from device_bench import bench
    from device_bench.runners.base import ArtifactError, RunnerUnavailable

    args = parser().parse_args(argv)
    runtime = args.runtime or bench.runtime_for(args.artifact)
    if runtime is None:
        print(f"device_bench: error: cannot tell the runtime of {args.artifact}: pass --runtime", file=sys.stderr)
        return 2
    try:
        job = bench.Job(args.artifact, runtime, args.threads, args.options, args.runs, args.warmup, args.min_time,
                        args.data, args.seed, args.versus, args.profile)
        result = bench.run(job)
    except (ArtifactError, RunnerUnavailable, OSError, KeyError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"device_bench: error: {message}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
