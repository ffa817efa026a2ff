"""JUnit XML for CI systems: one test case per artifact check, and per gate verdict when a gate ran.

A failed check or a regression is a ``<failure>``; a benchmark that could not run or a gate that could not judge
(missing metric, unreadable baseline) is an ``<error>``, so CI dashboards show both as red but tell them apart.
An artifact that was measured with no threshold to check, or not measured at all, adds a ``<skipped>`` case
``numerics`` saying so: it is never a passing test that claims a check.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from edgeprep.report.build import artifact_status, checks_count


def _case(suite: ET.Element, classname: str, name: str, outcome: str, message: str = "") -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
    if outcome in ("failure", "error"):
        ET.SubElement(case, outcome, message=message, type=name).text = message
    elif outcome == "skipped":
        ET.SubElement(case, "skipped", message=message)


def _finish(suite: ET.Element) -> None:
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    for kind, attr in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
        suite.set(attr, str(sum(1 for c in cases if c.find(kind) is not None)))


def junit_xml(report: dict, gate: dict | None = None) -> str:
    root = ET.Element("testsuites", name="edgeprep")
    target = (report.get("target") or {}).get("name", "none")
    suite = ET.SubElement(root, "testsuite", name=f"edgeprep.{report['command']}.{target}",
                          timestamp=report["created"])
    for a in report["artifacts"]:
        label = a["path"].rsplit("/", 1)[-1]
        if a.get("device"):
            label = f"{a['device']}/{label}"
        v = a["verification"]
        for c in v.get("checks", []):
            message = "" if c["passed"] else (c.get("detail") or f"{c['name']}: {c['value']} vs {c['threshold']}")
            failed = "error" if c["name"] == "bench" else "failure"     # a benchmark that did not complete
            _case(suite, label, c["name"], "passed" if c["passed"] else failed, message)
        status = artifact_status(v)
        if status == "unmeasured":
            _case(suite, label, "numerics", "skipped", f"unmeasured: {v.get('reason') or 'numerics not measured'}")
        elif status == "measured":
            message = "measured, no thresholds checked" if not checks_count(v) else "measured, not verified"
            _case(suite, label, "numerics", "skipped", message + (f": {v['reason']}" if v.get("reason") else ""))
        bench = a.get("bench")
        if bench:
            if bench["status"] == "ok":
                _case(suite, label, "bench", "passed")
            elif bench["status"] == "unavailable":
                _case(suite, label, "bench", "skipped", bench.get("error", ""))
    _finish(suite)
    if gate is not None:
        gsuite = ET.SubElement(root, "testsuite", name=f"edgeprep.gate.{target}")
        for vd in gate["verdicts"]:
            outcome = {"pass": "passed", "fail": "failure", "error": "error"}[vd["status"]]
            _case(gsuite, vd["artifact"], vd["check"], outcome, vd.get("detail", ""))
        _finish(gsuite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
