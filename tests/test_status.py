"""Statuses that say what happened: "verified" only against thresholds that were checked, "measured" when numerics
were measured with nothing to check, "unmeasured" when they were not measured, "failed" when a check failed —
in report.json, the console, summary.md, JUnit and HTML; and older reports ("unverified") still read.

One tiny untrained model, converted once to fp32 TFLite; every command runs in this process.
"""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import MANIFEST, build_small_cnn

GATED = """
name = "gated-tflite"
description = "fp32 TFLite with two thresholds"
formats = ["tflite"]
precisions = ["fp32"]
runtime = "litert"
threads = 1

[gates]
min_agreement = 0.99
max_size_bytes = {size}
"""

SAMPLES = "100"


@pytest.fixture(scope="module")
def model_and_artifact(tmp_path_factory):
    from edgeprep.config.formats import TFLiteOptions
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    d = tmp_path_factory.mktemp("status")
    path = d / "tiny.keras"
    build_small_cnn(sequential=True).save(path)
    art = convert(load_model(path), "tflite", "fp32", TFLiteOptions(), d / "tiny.fp32.tflite")
    return path, art


def _target(tmp_path: Path, size: int) -> Path:
    p = tmp_path / "gated.toml"
    p.write_text(GATED.format(size=size))
    return p


def _junit_cases(xml: str) -> dict[str, str]:
    """Each artifact test case by name: passed, failure, error or skipped (with its message)."""
    out = {}
    for case in ET.fromstring(xml).iter("testcase"):
        kid = next(iter(case), None)
        out[case.get("name")] = "passed" if kid is None else f"{kid.tag}: {kid.get('message')}"
    return out


def _views(report: dict, directory: Path) -> tuple[str, str, dict]:
    from edgeprep.report import markdown_summary
    from edgeprep.report.html import html_report
    from edgeprep.report.junit import junit_xml

    return markdown_summary(report), html_report(report, directory), _junit_cases(junit_xml(report))


def test_summary_takes_the_weakest_status():
    from edgeprep.report.build import exit_ok, summarize

    def entry(status, checks=1):
        return {"verification": {"status": status, "checks": [{"name": "min_agreement", "passed": status != "failed"}]
                                 * checks}}

    cases = [(["verified", "verified"], "passed"), (["verified", "measured"], "measured"),
             (["measured", "unmeasured"], "unmeasured"), (["unmeasured", "failed", "verified"], "failed"),
             (["unverified"], "unmeasured"), ([], "unmeasured")]
    for statuses, expected in cases:
        s = summarize([entry(st) for st in statuses])
        assert s["status"] == expected, (statuses, s)
        assert "unverified" not in s and exit_ok(s) == (expected != "failed")
    s = summarize([entry("verified", 0), entry("verified", 3)])      # an older report's zero-check "verified"
    assert (s["status"], s["measured"], s["verified"], s["thresholds_checked"]) == ("measured", 1, 1, 3)


def test_only_target_thresholds_verify():
    """Checks the target did not set (export integrity, finite outputs) can fail an artifact, never verify it."""
    from edgeprep.gate import judge, thresholds_in

    integrity = [{"name": "no_foldable_bn_ops", "passed": True}, {"name": "finite_outputs", "passed": True}]
    assert judge(True, integrity) == "measured" and thresholds_in(integrity) == 0
    assert judge(True, integrity + [{"name": "min_sqnr_db", "passed": True}]) == "verified"
    assert judge(True, [{"name": "no_foldable_bn_ops", "passed": False}]) == "failed"


def test_an_artifact_no_runtime_runs_is_unmeasured_even_when_its_size_passes(model_and_artifact):
    from dataclasses import replace

    from edgeprep.config.gates import Thresholds
    from edgeprep.stages.verify import unmeasured

    _, art = model_and_artifact
    art = replace(art, runtime=None, unavailable_reason="no runtime for tflite on this host")
    ok = unmeasured(art, art.unavailable_reason, Thresholds(max_size_bytes=art.size_bytes))
    assert ok["status"] == "unmeasured" and [c["passed"] for c in ok["checks"]] == [True]
    assert unmeasured(art, "x", Thresholds(max_size_bytes=art.size_bytes - 1))["status"] == "failed"


def test_verify_without_a_target_is_measured_never_a_pass(cli, model_and_artifact, tmp_path):
    model, art = model_and_artifact
    out = tmp_path / "out"
    proc = cli("verify", model, art.path, "--data", MANIFEST, "--samples", SAMPLES, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "measured (no thresholds)" in proc.stdout
    assert "MEASURED: 1 artifact measured; no thresholds checked (give --target" in proc.stdout
    assert "verified" not in proc.stdout.lower() and "passed" not in proc.stdout.lower()
    report = json.loads((out / "report.json").read_text())
    v = report["artifacts"][0]["verification"]
    assert v["status"] == "measured" and v["thresholds_checked"] == 0 and v["checks"] == []
    assert report["summary"] == {"status": "measured", "artifacts": 1, "verified": 0, "measured": 1,
                                 "unmeasured": 0, "failed": 0, "thresholds_checked": 0}
    md, html, cases = _views(report, out)
    assert (out / "summary.md").read_text() == md
    assert "| measured (no thresholds) |" in md and "**MEASURED**" in md
    assert "verified" not in md.lower() and "passed" not in md.lower()
    assert "measured (no thresholds)" in html and "<b>MEASURED</b>" in html and "verified" not in html.lower()
    assert cases == {"numerics": "skipped: measured, no thresholds checked"}


def test_verify_against_a_target_says_how_many_thresholds(cli, model_and_artifact, tmp_path):
    model, art = model_and_artifact
    out = tmp_path / "out"
    proc = cli("verify", model, art.path, "--data", MANIFEST, "--samples", SAMPLES,
               "--target", _target(tmp_path, art.size_bytes), "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "verified (2 checks)" in proc.stdout
    assert "VERIFIED: 1 artifact verified against 2 thresholds, every one passed." in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["artifacts"][0]["verification"]["thresholds_checked"] == 2
    assert report["summary"]["status"] == "passed" and report["summary"]["verified"] == 1
    md, html, cases = _views(report, out)
    assert "| verified (2 checks) |" in md and "**VERIFIED**: 1 artifact verified against 2 thresholds" in md
    assert "verified (2 checks)" in html
    assert cases == {"min_agreement": "passed", "max_size_bytes": "passed"}


def test_a_failed_threshold_fails_the_artifact_and_exits_1(cli, model_and_artifact, tmp_path):
    model, art = model_and_artifact
    out = tmp_path / "out"
    proc = cli("verify", model, art.path, "--data", MANIFEST, "--samples", SAMPLES,
               "--target", _target(tmp_path, art.size_bytes - 1), "--out", out)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "failed (max_size_bytes)" in proc.stdout
    assert "FAILED: 1 artifact failed; 2 thresholds checked." in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["status"] == "failed" and report["summary"]["failed"] == 1
    md, _, cases = _views(report, out)
    assert "| failed (max_size_bytes) |" in md and "**FAILED**" in md
    assert cases["min_agreement"] == "passed" and cases["max_size_bytes"].startswith("failure: ")


def test_bench_without_data_is_unmeasured_in_every_view(cli, model_and_artifact, tmp_path):
    _, art = model_and_artifact
    out = tmp_path / "b"
    proc = cli("bench", art.path, "--runs", "3", "--repeats", "1", "--warmup", "0", "--threads", "1",
               "--out", out, "--no-history")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "UNMEASURED: 1 artifact unmeasured; no thresholds checked." in proc.stdout
    assert "verified" not in proc.stdout.lower() and "passed" not in proc.stdout.lower()
    report = json.loads((out / "report.json").read_text())
    assert report["artifacts"][0]["bench"]["status"] == "ok"
    assert report["artifacts"][0]["verification"]["status"] == "unmeasured"
    assert report["summary"]["status"] == "unmeasured" and report["summary"]["unmeasured"] == 1
    assert "| unmeasured |" in (out / "summary.md").read_text()
    assert "<b>UNMEASURED</b>" in (out / "report.html").read_text()
    cases = _junit_cases((out / "junit.xml").read_text())
    assert cases == {"numerics": "skipped: unmeasured: no evaluation data was given (pass --data)",
                     "bench": "passed"}


def _as_older_edgeprep_wrote_it(report: dict, status: str) -> dict:
    """The report as edgeprep wrote it before "measured": "unverified", no thresholds_checked, the old summary."""
    old = copy.deepcopy(report)
    for a in old["artifacts"]:
        a["verification"].pop("thresholds_checked")
        a["verification"]["status"] = status
        a["verification"]["checks"] = []
    old["summary"] = {"status": "passed", "artifacts": 1, "verified": int(status == "verified"),
                      "unverified": int(status == "unverified"), "failed": 0}
    return old


def test_older_reports_with_unverified_still_read_in_gate_and_history(cli, model_and_artifact, tmp_path):
    from edgeprep import history
    from edgeprep.report import load_report

    model, art = model_and_artifact
    proc = cli("verify", model, art.path, "--data", MANIFEST, "--samples", SAMPLES, "--out", tmp_path / "new")
    assert proc.returncode == 0, proc.stderr[-2000:]
    new = json.loads((tmp_path / "new" / "report.json").read_text())
    target = _target(tmp_path, art.size_bytes)
    for status, word in (("unverified", "unmeasured"), ("verified", "measured (no thresholds)")):
        old_dir = tmp_path / status
        old_dir.mkdir()
        (old_dir / "report.json").write_text(json.dumps(_as_older_edgeprep_wrote_it(new, status)))
        old = load_report(old_dir)              # validates: the schema still accepts what older versions wrote
        md, html, cases = _views(old, old_dir)
        assert f"| {word} |" in md and word in html and "PASSED" not in md
        assert list(cases) == ["numerics"] and cases["numerics"].startswith("skipped: ")
        gate = cli("gate", old_dir, "--baseline", old_dir / "report.json", "--target", target,
                   "--markdown", tmp_path / f"{status}.md", "--junit", tmp_path / f"{status}.xml")
        assert gate.returncode == 0, gate.stderr[-2000:]      # the artifact's metrics are judged by the gate
        assert f"| {word} |" in (tmp_path / f"{status}.md").read_text()
    db = tmp_path / "h.sqlite"
    old = load_report(tmp_path / "unverified")
    history.record(old, tmp_path / "unverified" / "report.json", db, {"commit": "abc123", "tag": "v0", "branch": "m"})
    assert history.trend(db)[0]["status"] == "unmeasured"
    assert history.find("v0", db)["artifacts"][0]["verification"]["status"] == "unverified"
    gate = cli("gate", tmp_path / "new", "--baseline-ref", "v0", "--history", db, "--target", target)
    assert gate.returncode == 0, gate.stderr[-2000:]
