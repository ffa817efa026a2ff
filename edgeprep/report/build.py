"""Assemble ``report.json`` (schema version 1) from stage results, and read it back."""

from __future__ import annotations

import datetime as _dt
import json
from functools import lru_cache
from pathlib import Path

from edgeprep.artifact import Artifact
from edgeprep.errors import InputError
from edgeprep.gate import thresholds_in
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


# An artifact's verification status (edgeprep.gate.judge) and the summary status it allows, weakest first: the
# weakest artifact sets the run's status. Reports written before these words read "unverified" for "unmeasured".
ARTIFACT_STATUSES = ("failed", "unmeasured", "measured", "verified")
SUMMARY_STATUSES = ("failed", "unmeasured", "measured", "passed")
LEGACY_STATUSES = {"unverified": "unmeasured"}


def checks_count(verification: dict) -> int:
    """How many checks were evaluated on an artifact (older reports lack ``thresholds_checked``: count them)."""
    count = verification.get("thresholds_checked")
    return thresholds_in(verification.get("checks") or []) if count is None else count


def artifact_status(verification: dict) -> str:
    """The artifact's status in today's words, whatever edgeprep wrote it: an older report's ``unverified`` is
    ``unmeasured``, and its ``verified`` without a single check is ``measured`` (nothing was checked)."""
    status = LEGACY_STATUSES.get(verification["status"], verification["status"])
    return "measured" if status == "verified" and not checks_count(verification) else status


def summarize(entries: list[dict]) -> dict:
    """The ``summary`` of a report: the weakest artifact's status (a report without artifacts measured nothing)
    and how many artifacts have each status, with the checks evaluated over all of them."""
    statuses = [artifact_status(e["verification"]) for e in entries]
    weakest = min((ARTIFACT_STATUSES.index(s) for s in statuses), default=ARTIFACT_STATUSES.index("unmeasured"))
    return {"status": SUMMARY_STATUSES[weakest], "artifacts": len(entries),
            **{s: statuses.count(s) for s in ("verified", "measured", "unmeasured", "failed")},
            "thresholds_checked": sum(checks_count(e["verification"]) for e in entries)}


def settle(report: dict) -> dict:
    """Recompute what a report derives from its artifacts, after building it or after a stage added checks to an
    entry (a failed benchmark): each ``verification.thresholds_checked`` and the ``summary``. Returns ``report``."""
    for entry in report["artifacts"]:
        entry["verification"]["thresholds_checked"] = thresholds_in(entry["verification"].get("checks") or [])
    report["summary"] = summarize(report["artifacts"])
    return report


def summary_of(report: dict) -> dict:
    """A report's summary in today's words: as written, or recomputed from the artifacts of an older report
    (keeping its ``failed``, which a fleet sets for a device that could not be used)."""
    summary = report["summary"]
    if "measured" in summary:
        return summary
    fresh = summarize(report["artifacts"])
    return {**fresh, "status": "failed"} if summary.get("status") == "failed" else fresh


def exit_ok(summary: dict) -> bool:
    """Whether a command exits 0: nothing failed. ``measured`` and ``unmeasured`` are not failures (and are never
    printed as passes)."""
    return summary["status"] != "failed"


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
        "summary": {},
    }
    report.update(extra or {})
    return settle(report)


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
