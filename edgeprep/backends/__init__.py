"""Converter backends: one module per deployment format behind the ``Backend`` protocol.

Registration is explicit (``@REGISTRY.register("tflite")`` in each module, each name listed below) and lazy: the
module, and its toolchain, is imported only when that format is asked for.
"""

from __future__ import annotations

from typing import Iterable

from device_bench.registry import LazyRegistry
from edgeprep.backends.base import Backend
from edgeprep.errors import RuntimeUnavailable

# Format -> the module that registers it, in the order edgeprep lists formats in messages (``LISTED``).
MODULES = {
    "tflite": "edgeprep.backends.tflite.backend",
    "openvino": "edgeprep.backends.openvino.backend",
    "coreml": "edgeprep.backends.coreml.backend",
}
REGISTRY: LazyRegistry[type[Backend]] = LazyRegistry("format", MODULES, RuntimeUnavailable)
register = REGISTRY.register
FORMATS = tuple(REGISTRY.names())
LISTED = tuple(MODULES)


def get_backend(name: str) -> Backend:
    return REGISTRY.get(name)()


def require(formats: Iterable[str]) -> None:
    """Refuse, before any work, formats whose toolchain is not installed: one ``RuntimeUnavailable`` line naming
    the toolchains and the extras that install them ("the openvino format needs OpenVINO and NNCF: pip install
    'edgeprep[openvino]'"). Nothing is imported; the formats' names are checked first (an unknown one is refused)."""
    from edgeprep.toolchain import missing
    from edgeprep.toolchain import require as require_fields

    backends = [get_backend(f) for f in dict.fromkeys(formats)]
    short = [b for b in backends if missing(*b.packages)]
    if not short:
        return
    fields = list(dict.fromkeys(f for b in short for f in b.packages))
    names = " and ".join(b.name for b in short)
    require_fields(f"the {names} format{'s' if len(short) > 1 else ''}", *fields)


def needing_calibration(plan: Iterable[tuple[str, str]]) -> list[str]:
    """The ``"<format> <precision>"`` artifacts of ``plan`` ((format, precision) pairs) that cannot be converted
    without calibration data (``Backend.needs_calibration``: int8, except Core ML's weights-only int8)."""
    return [f"{fmt} {precision}" for fmt, precision in plan if get_backend(fmt).needs_calibration(precision)]


def suffix_formats() -> dict[str, str]:
    """Artifact file suffix -> format (``.tflite`` -> ``tflite``), in ``LISTED`` order."""
    return {get_backend(fmt).suffix: fmt for fmt in LISTED}


__all__ = ["Backend", "FORMATS", "LISTED", "REGISTRY", "get_backend", "needing_calibration", "register", "require",
           "suffix_formats"]
