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


# What each report field's toolchain is imported as, what messages call it, and the extra of pyproject.toml that
# installs it (``pip install 'edgeprep[EXTRA]'``). TensorFlow is in no extra but ``tflite``: any TensorFlow
# (``tensorflow``, ``tensorflow-cpu``, ``tensorflow-macos``) serves every format, so the others never force one.
REQUIREMENTS: dict[str, tuple[str, str, str]] = {
    "tensorflow": ("tensorflow", "TensorFlow", "tflite"),
    "litert": ("ai_edge_litert", "LiteRT", "tflite"),
    "openvino": ("openvino", "OpenVINO", "openvino"),
    "nncf": ("nncf", "NNCF", "openvino"),
    "coremltools": ("coremltools", "coremltools", "coreml"),
    "onnx": ("onnx", "ONNX", "onnx"),
    "onnxruntime": ("onnxruntime", "ONNX Runtime", "onnx"),
}
TENSORFLOW_HINT = "pip install 'edgeprep[tflite]', or a TensorFlow of your own: pip install tensorflow-cpu"


def installed(field: str) -> bool:
    """Whether the toolchain of report field ``field`` can be imported here (found, not imported: cheap)."""
    from importlib.util import find_spec

    try:
        return find_spec(REQUIREMENTS[field][0]) is not None
    except (ImportError, ValueError):    # a broken parent package or a module without a spec
        return False


def missing(*fields: str) -> list[str]:
    """The report fields among ``fields`` whose toolchain is not installed, in the order given."""
    return [f for f in fields if not installed(f)]


def require(what: str, *fields: str) -> None:
    """Refuse ``what`` ("the openvino format") when a toolchain of ``fields`` is missing: one ``RuntimeUnavailable``
    line naming the toolchains and the extra that installs them (``pip install 'edgeprep[openvino]'``)."""
    from edgeprep.errors import RuntimeUnavailable

    absent = missing(*fields)
    if not absent:
        return
    names = [REQUIREMENTS[f][1] for f in absent]
    extras = sorted({REQUIREMENTS[f][2] for f in absent})
    hint = f"pip install 'edgeprep[{','.join(extras)}]'"
    if absent == ["tensorflow"]:
        hint = TENSORFLOW_HINT
    elif "tensorflow" in absent:
        hint += " (or add a TensorFlow of your own: pip install tensorflow-cpu)"
    raise RuntimeUnavailable(f"{what} needs {' and '.join(names)}", hint)


def require_tensorflow(what: str) -> None:
    """Refuse ``what`` ("loading a Keras model") without a TensorFlow: Keras 3 runs on it, and every converter
    edgeprep drives reads the model through it."""
    require(what, "tensorflow")
