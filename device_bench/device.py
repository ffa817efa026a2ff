"""What machine a benchmark ran on, and whether a runtime can run there (the standard library, then numpy).

    python -m device_bench.device --runtime litert     # prints JSON: the machine, Python, the runtime's version

``info()`` is recorded in every benchmark result (``device``), so a report says which CPU architecture and OS
produced its numbers — under qemu-user emulation, ``machine`` is the emulated ``aarch64``. A remote transport runs
``probe`` on a device before benchmarking on it, to say in one line what is missing there.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess

        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None
    return None


def _matrix_units() -> list[str]:
    """The CPU's int8/bf16 matrix engines the kernel lets processes use (x86 AMX: ``amx_int8``, ``amx_bf16``), from
    /proc/cpuinfo's flags. XNNPACK takes AMX for int8 GEMMs when it is there, and on narrow mobile layers those tile
    kernels are slower than its AVX-512 ones: an int8/fp32 ratio measured on such a CPU does not carry to an edge
    CPU without one. Only an x86 process reads them (under qemu-user, /proc/cpuinfo may be the host's)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return sorted(flag for flag in value.split() if flag in ("amx_int8", "amx_bf16"))
    except OSError:
        pass
    return []


def info() -> dict:
    """The machine as this process sees it (an emulated process sees the emulated machine)."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"machine": platform.machine(), "system": platform.system(), "release": platform.release(),
            "python": platform.python_version(), "cpu_model": _cpu_model(), "cpus": cpus,
            "matrix_units": _matrix_units()}


def probe(runtime: str | None) -> dict:
    """``info()`` plus whether numpy and ``runtime`` import here (and their versions): never raises."""
    out = {"device": info(), "numpy": None, "runtime": None, "error": None}
    try:
        import numpy

        out["numpy"] = numpy.__version__
    except ImportError:
        out["error"] = "numpy is not installed (pip install numpy)"
        return out
    if runtime:
        from device_bench.runners import RunnerUnavailable, get_runner

        try:
            get_runner(runtime)().load_runtime()
            out["runtime"] = runtime
        except RunnerUnavailable as exc:
            out["error"] = str(exc)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="device_bench.device", description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", help="also check that this runner's runtime imports here")
    args = ap.parse_args(argv)
    json.dump(probe(args.runtime), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
