"""The raw per-iteration latencies of benchmarks: the side file beside report.json, read back and inlined.

The gate's statistics need every iteration's latency; the report stays readable by keeping them in
``latencies.json`` (keyed by artifact file name, one list per benchmark process). A baseline or a history entry
carries them inline (``bench.latencies_ms``) so it is one self-contained file.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeprep.errors import InputError
from edgeprep.outputs import atomic_path

LATENCIES_FILE = "latencies.json"
LATENCIES_VERSION = 1


def artifact_key(entry: dict) -> str:
    """How an artifact is matched between a report, its latencies file and a baseline: its file name (prefixed
    with the device in a fleet report, whose devices may share artifact names)."""
    name = Path(entry["path"]).name
    return f"{entry['device']}/{name}" if entry.get("device") else name


def _is_latencies(path: Path) -> bool:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"schema_version", "unit", "artifacts"} <= data.keys()


def write_latencies(directory: Path, latencies: dict[str, tuple[tuple[float, ...], ...]]) -> Path:
    """The side file of raw per-iteration latencies (milliseconds), keyed by artifact file name: one list per
    benchmark process."""
    with atomic_path(Path(directory) / LATENCIES_FILE, _is_latencies) as tmp:
        tmp.write_text(json.dumps({"schema_version": LATENCIES_VERSION, "unit": "ms",
                                   "artifacts": {k: [list(p) for p in v] for k, v in latencies.items()}}) + "\n")
    return Path(directory) / LATENCIES_FILE


def _groups(raw: list) -> list[list[float]]:
    """Latencies as one list per process (a flat list is one process)."""
    return [list(g) for g in raw] if raw and isinstance(raw[0], list) else [list(raw)]


def read_latencies(report: dict, directory: Path) -> dict[str, list[list[float]]]:
    """Raw latencies of every benchmarked artifact of ``report``: inlined (``bench.latencies_ms``, as in a
    baseline file) or from the side file beside it. A side file that is named but missing is an error."""
    out: dict[str, list[list[float]]] = {}
    sides: dict[str, dict] = {}
    for a in report["artifacts"]:
        bench = a.get("bench") or {}
        if bench.get("status") != "ok":
            continue
        if "latencies_ms" in bench:
            out[artifact_key(a)] = _groups(bench["latencies_ms"])
            continue
        name = bench.get("latencies_file", LATENCIES_FILE)
        side = sides.get(name)
        if side is None:
            path = Path(directory) / name
            try:
                side = sides[name] = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise InputError(f"cannot read the raw latencies {path} ({exc})",
                                 "keep latencies.json beside report.json, or re-run the benchmark") from None
            if side.get("schema_version") != LATENCIES_VERSION:
                raise InputError(f"{path}: latencies file version {side.get('schema_version')!r}, this edgeprep "
                                 f"reads version {LATENCIES_VERSION}", "re-run the benchmark")
        if Path(a["path"]).name in side.get("artifacts", {}):     # side files are per device: plain names
            out[artifact_key(a)] = _groups(side["artifacts"][Path(a["path"]).name])
    return out


def with_latencies(report: dict, directory: Path) -> dict:
    """A copy of ``report`` with each benchmarked artifact's raw latencies inlined (``bench.latencies_ms``):
    one self-contained file, as a baseline or a history entry needs."""
    import copy

    out = copy.deepcopy(report)
    raw = read_latencies(report, directory)
    for a in out["artifacts"]:
        if artifact_key(a) in raw:
            a["bench"]["latencies_ms"] = raw[artifact_key(a)]
            a["bench"].pop("latencies_file", None)
    return out
