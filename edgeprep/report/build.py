"""Assemble ``report.json`` (schema version 1) from stage results, and read it back."""

from __future__ import annotations

import datetime as _dt
import json
from functools import lru_cache
from pathlib import Path

from edgeprep.backends import Artifact
from edgeprep.errors import InputError
from edgeprep.toolchain import toolchain

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")


def artifact_entry(artifact: Artifact, verification: dict, root: Path) -> dict:
    """One ``artifacts[]`` entry; paths relative to the report's directory ``root``."""

    def rel(p: Path) -> str:
        try:
            return str(Path(p).resolve().relative_to(root.resolve()))
        except ValueError:
            return str(p)

    return {"format": artifact.format, "precision": artifact.precision, "path": rel(artifact.path),
            "files": [rel(f) for f in artifact.files], "size_bytes": artifact.size_bytes, "sha256": artifact.sha256,
            "quantization": artifact.quantization, "inspection": artifact.inspection,
            "convert_seconds": artifact.convert_seconds, "metrics": verification.get("metrics"),
            "verification": {k: v for k, v in verification.items() if k != "metrics"},
            "notes": list(artifact.notes)}


def target_entry(target) -> dict | None:
    """The ``target`` object of a report: name, where it was loaded from, and the resolved profile."""
    return None if target is None else {"name": target.name, "source": target.source, "profile": target.to_dict()}


def summarize(entries: list[dict]) -> dict:
    statuses = [e["verification"]["status"] for e in entries]
    failed = statuses.count("failed")
    return {"status": "failed" if failed else "passed", "artifacts": len(entries),
            "verified": statuses.count("verified"), "unverified": statuses.count("unverified"), "failed": failed}


def build_report(*, command: str, model: dict, artifacts: list[dict], target: dict | None = None,
                 data: dict | None = None, reference: dict | None = None, stages: list[dict] | None = None,
                 extra: dict | None = None) -> dict:
    report = {
        "schema_version": SCHEMA_VERSION,
        "edgeprep_version": toolchain()["edgeprep"],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "target": target,
        "model": model,
        "data": data,
        "reference": reference,
        "artifacts": artifacts,
        "stages": stages or [],
        "toolchain": toolchain(),
        "summary": summarize(artifacts),
    }
    report.update(extra or {})
    return report


@lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def validate(report: dict) -> None:
    """Raise ``ValueError`` naming the first place ``report`` breaks the schema."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(report), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.path) or "(top level)"
        raise ValueError(f"report does not match schema version {SCHEMA_VERSION} at {where}: {e.message}")


def load_report(path: str | Path) -> dict:
    """Read and validate a report; a different schema version or a broken file is a clear error."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise InputError(f"report not found: {path}", "pass a report.json or the run directory holding it")
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})", "re-run the command that wrote it") from None
    version = report.get("schema_version") if isinstance(report, dict) else None
    if version != SCHEMA_VERSION:
        raise InputError(f"{path}: report schema version {version!r}, this edgeprep reads version {SCHEMA_VERSION}",
                         "re-create the report with this version of edgeprep")
    try:
        validate(report)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    return report
