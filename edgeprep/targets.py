"""Target device profiles: frozen, validated values loaded from TOML.

A profile names the formats and precisions to produce (every combination), the runtime and threads the device
uses, optional preprocessing, per-format options, and gate thresholds. Unknown keys are rejected with the offending
key named.

Profiles are looked up by name along a search path: each directory of ``$EDGEPREP_TARGETS`` (``os.pathsep``
separated), then ``./targets`` in the current directory, then the profiles shipped inside the package
(``edgeprep/profiles/*.toml``, read through ``importlib.resources`` so they work from a wheel, a zip or a checkout).
The first directory holding a name wins. ``edgeprep targets`` lists them; ``edgeprep targets show NAME`` prints one.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

from edgeprep.artifact import PRECISIONS
from edgeprep.backends import FORMATS, get_backend
from edgeprep.config import dump_toml, from_mapping, to_mapping
from edgeprep.config.bench import BenchConfig
from edgeprep.config.calibrate import CalibrateConfig
from edgeprep.config.formats import CoreMLOptions, OpenVINOOptions, TFLiteOptions
from edgeprep.config.gates import Gates
from edgeprep.config.quantize import QuantizeConfig
from edgeprep.errors import ConfigError, InputError

# The profiles shipped with edgeprep: package data, a Path in a checkout or a wheel, a zip entry in a zip.
SHIPPED: Traversable = files("edgeprep") / "profiles"


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
        if self.runtime != "auto":     # "auto": each format's own runtime; else one that runs every format
            bad = [f for f in self.formats if f not in FORMATS or self.runtime not in get_backend(f).runtimes]
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


@dataclass(frozen=True)
class ProfileFile:
    """One profile file on the search path: its name, which part of the path it came from, and where it is."""

    name: str
    origin: Literal["$EDGEPREP_TARGETS", "./targets", "shipped"]
    file: Traversable      # a Path, or an importlib.resources entry for the shipped profiles

    def read_text(self) -> str:
        return self.file.read_text(encoding="utf-8")

    def __str__(self) -> str:
        return str(self.file)


def search_path() -> list[tuple[str, Traversable]]:
    """(origin, directory) in lookup order; directories that do not exist are left out, duplicates kept once."""
    dirs: list[tuple[str, Traversable]] = [
        ("$EDGEPREP_TARGETS", Path(p)) for p in os.environ.get("EDGEPREP_TARGETS", "").split(os.pathsep) if p]
    dirs += [("./targets", Path.cwd() / "targets"), ("shipped", SHIPPED)]
    seen, out = set(), []
    for origin, d in dirs:
        key = d.resolve() if isinstance(d, Path) else d
        if key not in seen and d.is_dir():
            seen.add(key)
            out.append((origin, key))
    return out


def profile_files(dirs: list[tuple[str, Traversable]] | None = None) -> list[ProfileFile]:
    """Every ``*.toml`` on the search path in lookup order; a name found twice appears twice (the first wins)."""
    found = []
    for origin, d in search_path() if dirs is None else dirs:
        entries = sorted((e for e in d.iterdir() if e.name.endswith(".toml") and e.is_file()), key=lambda e: e.name)
        found += [ProfileFile(e.name[:-len(".toml")], origin, e) for e in entries]
    return found


def available(dirs: list[tuple[str, Traversable]] | None = None) -> dict[str, ProfileFile]:
    """Profile name -> the file that wins (earlier search-path directories win)."""
    found: dict[str, ProfileFile] = {}
    for p in profile_files(dirs):
        found.setdefault(p.name, p)
    return found


def load_target(name_or_path: str | Path) -> TargetProfile:
    """Load a profile by file path or by name (``litert-cpu``: the first ``litert-cpu.toml`` on the search path)."""
    text_path = Path(name_or_path)
    if text_path.suffix == ".toml" or text_path.exists():
        if not text_path.is_file():
            raise InputError(f"target profile not found: {text_path}", "check the path, or pass a target name")
        return parse_target(text_path.read_text(encoding="utf-8"), str(text_path))
    found = find_profile(str(name_or_path))
    return parse_target(found.read_text(), str(found))


def find_profile(name: str) -> ProfileFile:
    """The profile file a name resolves to; an unknown name is an ``InputError`` listing the known ones."""
    known = available()
    if name not in known:
        raise InputError(f"unknown target '{name}'",
                         f"known targets: {', '.join(sorted(known)) or 'none'} (see 'edgeprep targets')")
    return known[name]
