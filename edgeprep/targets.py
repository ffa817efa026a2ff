"""Target device profiles: frozen, validated values loaded from TOML.

A profile names the formats and precisions to produce (every combination), the runtime and threads the device
uses, optional preprocessing, per-format options, and gate thresholds. Unknown keys are rejected with the offending
key named. ``edgeprep targets`` lists the profiles found in the search path (``$EDGEPREP_TARGETS``, ``./targets``,
then the profiles shipped with edgeprep).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgeprep.backends import FORMATS
from edgeprep.backends.base import PRECISIONS
from edgeprep.config import dump_toml, from_mapping, to_mapping
from edgeprep.config.bench import BenchConfig
from edgeprep.config.calibrate import CalibrateConfig
from edgeprep.config.formats import CoreMLOptions, OpenVINOOptions, TFLiteOptions
from edgeprep.config.gates import Gates
from edgeprep.config.quantize import QuantizeConfig
from edgeprep.errors import ConfigError, InputError

SHIPPED = Path(__file__).resolve().parent.parent / "targets"

# Which runtime executes which format. "auto" = each format's own runtime.
RUNTIME_FORMATS = {"litert": ("tflite",), "openvino": ("openvino", "tflite"), "coreml": ("coreml",),
                   "onnxruntime": ()}


@dataclass(frozen=True)
class VerifyConfig:
    samples: int | None = None       # evaluation samples to use (default: all)

    def __post_init__(self) -> None:
        if self.samples is not None and self.samples < 1:
            raise ValueError("samples must be >= 1")


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    formats: tuple[Literal["tflite", "openvino", "coreml"], ...]
    precisions: tuple[Literal["fp32", "fp16", "int8"], ...]
    runtime: Literal["auto", "litert", "openvino", "coreml", "onnxruntime"] = "auto"
    threads: int = 2
    preprocess: dict = field(default_factory=dict)   # validated as edgeprep.data.Preprocess when data is loaded
    quantize: QuantizeConfig = QuantizeConfig()
    calibrate: CalibrateConfig = CalibrateConfig()
    verify: VerifyConfig = VerifyConfig()
    tflite: TFLiteOptions = TFLiteOptions()
    openvino: OpenVINOOptions = OpenVINOOptions()
    coreml: CoreMLOptions = CoreMLOptions()
    gates: Gates = Gates()
    bench: BenchConfig | None = None                 # [bench]: edgeprep run benchmarks each artifact when set
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.formats:
            raise ValueError("formats must name at least one of " + ", ".join(FORMATS))
        if not self.precisions:
            raise ValueError("precisions must name at least one of " + ", ".join(PRECISIONS))
        if self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.runtime != "auto":
            bad = [f for f in self.formats if f not in RUNTIME_FORMATS[self.runtime]]
            if bad:
                raise ValueError(f"runtime '{self.runtime}' cannot execute format(s) {', '.join(bad)}; use "
                                 "runtime = \"auto\" or a runtime that runs them")
        for dupe in {x for x in self.formats + self.precisions if (self.formats + self.precisions).count(x) > 1}:
            raise ValueError(f"'{dupe}' is listed twice")
        from edgeprep.data import Preprocess

        Preprocess.from_mapping(self.preprocess, f"{self.source or self.name} [preprocess]")

    def plan(self) -> list[tuple[str, str]]:
        """Every (format, precision) artifact this target asks for, in a stable order."""
        return [(f, p) for f in self.formats for p in self.precisions]

    def options_for(self, fmt: str):
        return getattr(self, fmt)

    def to_dict(self) -> dict:
        d = to_mapping(self)
        d.pop("source", None)
        return d

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())


def parse_target(text: str, source: str) -> TargetProfile:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML ({exc})", "fix the syntax of the target profile") from None
    if "source" in raw:
        raise ConfigError(f"{source}: unknown key 'source'", "remove it; edgeprep records where a profile came from")
    for key in ("name", "description", "formats", "precisions"):
        if key not in raw:
            raise ConfigError(f"{source}: missing required key '{key}'",
                              "a target names name, description, formats and precisions")
    return from_mapping(TargetProfile, {**raw, "source": source}, source)


def search_path() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("EDGEPREP_TARGETS", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "targets", SHIPPED]
    seen, out = set(), []
    for d in dirs:
        r = d.resolve()
        if r not in seen and r.is_dir():
            seen.add(r)
            out.append(r)
    return out


def available() -> dict[str, Path]:
    """Profile name -> file, earlier search-path directories winning."""
    found: dict[str, Path] = {}
    for d in search_path():
        for p in sorted(d.glob("*.toml")):
            found.setdefault(p.stem, p)
    return found


def load_target(name_or_path: str | Path) -> TargetProfile:
    """Load a profile by file path or by name (``litert-cpu`` -> ``targets/litert-cpu.toml``)."""
    text_path = Path(name_or_path)
    if text_path.suffix == ".toml" or text_path.exists():
        if not text_path.is_file():
            raise InputError(f"target profile not found: {text_path}", "check the path, or pass a target name")
        path = text_path
    else:
        known = available()
        if str(name_or_path) not in known:
            raise InputError(f"unknown target '{name_or_path}'",
                             f"known targets: {', '.join(sorted(known)) or 'none'} (see 'edgeprep targets')")
        path = known[str(name_or_path)]
    return parse_target(path.read_text(), str(path))
