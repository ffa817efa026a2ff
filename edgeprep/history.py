"""Run history: every report recorded in one SQLite file, for trends and for picking a baseline by commit/tag.

The file is ``$EDGEPREP_HISTORY`` if set, else ``.edgeprep/history.sqlite`` under the current directory (a CI job
caches that folder between runs). Each run stores its full report with the raw latencies inlined, so any recorded
run can serve as a baseline (``edgeprep gate --baseline-ref v1.2``), and one row per artifact with the headline
figures for trends; its status is the summary's in today's words (an older report's "unverified" artifacts
count as "unmeasured"). Commit, tag and branch come from ``$EDGEPREP_COMMIT``/``$EDGEPREP_TAG``, the CI's variables
(GitHub Actions, GitLab CI), or ``git`` in the current directory.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

from edgeprep.errors import InputError

DEFAULT = Path(".edgeprep") / "history.sqlite"
VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, command TEXT, target TEXT, model TEXT,
    model_sha256 TEXT, commit_sha TEXT, tag TEXT, branch TEXT, status TEXT, report_path TEXT, report TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id INTEGER NOT NULL REFERENCES runs(id), name TEXT NOT NULL, format TEXT, precision TEXT,
    size_bytes INTEGER, accuracy REAL, accuracy_drop REAL, p50_ms REAL, mean_ms REAL, p99_ms REAL,
    peak_rss_bytes INTEGER, instructions INTEGER);
CREATE INDEX IF NOT EXISTS runs_ref ON runs(commit_sha, tag);
"""


def default_path() -> Path:
    return Path(os.environ.get("EDGEPREP_HISTORY") or DEFAULT)


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    if not create and not path.is_file():
        raise InputError(f"no run history at {path}", "record runs first (edgeprep run / bench), or set "
                                                      "$EDGEPREP_HISTORY / --history")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = sqlite3.connect(str(path), timeout=30)
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, VERSION):
            raise InputError(f"{path}: history version {version}, this edgeprep reads version {VERSION}",
                             "use another --history file")
        con.executescript(_SCHEMA)
        con.execute(f"PRAGMA user_version = {VERSION}")
    except sqlite3.OperationalError as exc:
        raise InputError(f"{path}: cannot open the run history ({exc})",
                         "use a --history file you can write (or $EDGEPREP_HISTORY)") from None
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path}: not a readable run history ({exc})", "use another --history file") from None
    return con


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def revision() -> dict:
    """Commit, tag and branch of the code being measured (environment first, then git)."""
    env = os.environ
    commit = env.get("EDGEPREP_COMMIT") or env.get("GITHUB_SHA") or env.get("CI_COMMIT_SHA") \
        or _git("rev-parse", "HEAD")
    tag = env.get("EDGEPREP_TAG") or (env.get("GITHUB_REF_NAME") if env.get("GITHUB_REF_TYPE") == "tag" else None) \
        or env.get("CI_COMMIT_TAG") or _git("describe", "--tags", "--exact-match")
    branch = env.get("GITHUB_HEAD_REF") or (env.get("GITHUB_REF_NAME") if env.get("GITHUB_REF_TYPE") == "branch"
                                            else None) or env.get("CI_COMMIT_REF_NAME") \
        or _git("rev-parse", "--abbrev-ref", "HEAD")
    return {"commit": commit, "tag": tag, "branch": branch}


def record(report: dict, report_path: Path, path: Path | None = None, rev: dict | None = None) -> Path:
    """Add a written report (its raw latencies inlined) to the history; returns the history file."""
    from edgeprep.report.build import summary_of
    from edgeprep.report.latencies import with_latencies

    path = Path(path or default_path())
    rev = rev or revision()
    full = with_latencies(report, Path(report_path).parent)
    model = report.get("model") or {}
    target = (report.get("target") or {}).get("name")
    con = _connect(path, create=True)
    with con:
        cur = con.execute(
            "INSERT INTO runs (created, command, target, model, model_sha256, commit_sha, tag, branch, status, "
            "report_path, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (report["created"], report["command"], target, model.get("path"), model.get("sha256"), rev["commit"],
             rev["tag"], rev["branch"], summary_of(report)["status"], str(Path(report_path).resolve()),
             json.dumps(full)))
        for a in report["artifacts"]:
            m, b = a.get("metrics") or {}, a.get("bench") or {}
            lat = b.get("latency_ms") or {}
            con.execute("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (cur.lastrowid, Path(a["path"]).name, a["format"], a["precision"], a["size_bytes"],
                         m.get("accuracy"), m.get("accuracy_drop"), lat.get("p50"), lat.get("mean"), lat.get("p99"),
                         b.get("peak_rss_bytes"), (b.get("instructions") or {}).get("instructions_per_inference")))
    con.close()
    return path


def find(ref: str, path: Path | None = None, target: str | None = None) -> dict:
    """The latest recorded report whose tag is ``ref`` or whose commit starts with ``ref`` (for ``target``)."""
    path = Path(path or default_path())
    con = _connect(path, create=False)
    query = "SELECT report FROM runs WHERE (tag = ? OR commit_sha LIKE ?)" + (" AND target = ?" if target else "")
    args = [ref, ref + "%"] + ([target] if target else [])
    row = con.execute(query + " ORDER BY id DESC LIMIT 1", args).fetchone()
    con.close()
    if row is None:
        raise InputError(f"no run recorded for '{ref}'" + (f" on target {target}" if target else "") + f" in {path}",
                         "pick a commit or tag listed by 'edgeprep history'")
    return json.loads(row[0])


def trend(path: Path | None = None, target: str | None = None, limit: int = 50) -> list[dict]:
    """Per-artifact figures of the last ``limit`` runs (oldest first), for trend plots and listings."""
    path = Path(path or default_path())
    if not path.is_file():
        return []
    con = _connect(path, create=False)
    con.row_factory = sqlite3.Row
    only = " WHERE target = ?" if target else ""
    rows = con.execute(
        "SELECT r.id, r.created, r.command, r.target, r.commit_sha, r.tag, r.branch, r.status, a.* FROM runs r "
        f"JOIN artifacts a ON a.run_id = r.id WHERE r.id IN (SELECT id FROM runs{only} ORDER BY id DESC LIMIT ?) "
        "ORDER BY r.id", ([target] if target else []) + [limit]).fetchall()
    con.close()
    return [dict(r) for r in rows]


def try_record(report: dict, report_path: Path, path: Path | None = None, warn=None) -> Path | None:
    """``record``, but a history that cannot be written is a warning: the run itself succeeded."""
    try:
        return record(report, report_path, path)
    except (InputError, OSError, sqlite3.Error) as exc:
        if warn:
            warn(f"run not recorded in the history: {exc}")
        return None
