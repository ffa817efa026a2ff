"""What produced a report: package versions (read from metadata, nothing imported), OS and CPU."""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

# (report field, distributions that provide it), in report order: the packages, not the formats (each backend
# names the fields of its own toolchain in ``Backend.packages``). A table here rather than asked of the backends:
# reports read it, and both sit below the backends.
PACKAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("tensorflow", ("tensorflow-cpu", "tensorflow", "tensorflow-macos")),
    ("keras", ("keras",)),
    ("litert", ("ai-edge-litert",)),
    ("coremltools", ("coremltools",)),
    ("openvino", ("openvino",)),
    ("nncf", ("nncf",)),
    ("onnx", ("onnx",)),
    ("onnxruntime", ("onnxruntime",)),
    ("numpy", ("numpy",)),
)
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd",
             "asimddp", "i8mm")


def version_of(*dists: str) -> str | None:
    for d in dists:
        try:
            return metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return None


def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    return {"model": model, "arch": platform.machine(), "cores": os.cpu_count(),
            "flags": sorted(f for f in CPU_FLAGS if f in flags)}


@lru_cache(maxsize=1)
def toolchain() -> dict:
    from edgeprep import __version__

    return {"edgeprep": __version__, "python": platform.python_version(),
            **{name: version_of(*dists) for name, dists in PACKAGES},
            "os": f"{platform.system()} {platform.release()}", "platform": sys.platform, "cpu": cpu_info()}
