"""JUnit XML for CI systems: one test case per artifact check, and per gate verdict when a gate ran.

A failed check or a regression is a ``<failure>``; a benchmark that could not run or a gate that could not judge
(missing metric, unreadable baseline) is an ``<error>``, so CI dashboards show both as red but tell them apart.
An artifact that was measured with no threshold to check, or not measured at all, adds a ``<skipped>`` case
``numerics`` saying so: it is never a passing test that claims a check.

Each case's ``time`` is the seconds the report recorded for the work that produced what it judges: the artifact's
conversion (its size and graph checks), its verification (accuracy, agreement, SQNR, finite outputs, ``numerics``)
or its benchmark (``bench``: the timed iterations); a stage's seconds are shared evenly by its cases, so that a
suite's time adds up to the time spent. A gate verdict on latency judged side by side takes the seconds of its
rounds; the gate's other verdicts are arithmetic (time 0).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from edgeprep.report.build import artifact_status, checks_count

# Checks judged on the converted artifact itself (its size, its graph); "bench" is the benchmark's; any other
# check is judged on the verification's outputs.
CONVERSION_CHECKS = frozenset({"max_size_bytes", "no_foldable_bn_ops", "all_int8"})


def _case(suite: ET.Element, classname: str, name: str, outcome: str, message: str = "",
          seconds: float = 0.0) -> ET.Element:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=_time(seconds))
    if outcome in ("failure", "error"):
        ET.SubElement(case, outcome, message=message, type=name).text = message
    elif outcome == "skipped":
        ET.SubElement(case, "skipped", message=message)
    return case


def _time(seconds: float) -> str:
    return f"{max(seconds, 0.0):.3f}"


def _finish(suite: ET.Element) -> None:
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    for kind, attr in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
        suite.set(attr, str(sum(1 for c in cases if c.find(kind) is not None)))
    suite.set("time", _time(sum(float(c.get("time")) for c in cases)))


def _stage(check: str) -> str:
    return "bench" if check == "bench" else ("convert" if check in CONVERSION_CHECKS else "verify")


def _stage_seconds(a: dict) -> dict[str, float]:
    """The seconds the report recorded for this artifact's conversion, verification and benchmark."""
    bench = a.get("bench") or {}
    return {"convert": a.get("convert_seconds") or 0.0, "verify": (a.get("verification") or {}).get("seconds") or 0.0,
            "bench": bench.get("measured_seconds") or 0.0}


def _artifact_cases(suite: ET.Element, a: dict, label: str) -> None:
    """The artifact's cases: (name, outcome, message, stage), timed by their stage's share of its seconds."""
    cases = []
    v = a["verification"]
    for c in v.get("checks", []):
        message = "" if c["passed"] else (c.get("detail") or f"{c['name']}: {c['value']} vs {c['threshold']}")
        failed = "error" if c["name"] == "bench" else "failure"     # a benchmark that did not complete
        cases.append((c["name"], "passed" if c["passed"] else failed, message, _stage(c["name"])))
    status = artifact_status(v)
    if status == "unmeasured":
        cases.append(("numerics", "skipped", f"unmeasured: {v.get('reason') or 'numerics not measured'}", "verify"))
    elif status == "measured":
        message = "measured, no thresholds checked" if not checks_count(v) else "measured, not verified"
        cases.append(("numerics", "skipped", message + (f": {v['reason']}" if v.get("reason") else ""), "verify"))
    bench = a.get("bench")
    if bench:
        if bench["status"] == "ok":
            cases.append(("bench", "passed", "", "bench"))
        elif bench["status"] == "unavailable":
            cases.append(("bench", "skipped", bench.get("error", ""), "bench"))
    seconds = _stage_seconds(a)
    shares = {stage: sum(1 for c in cases if c[3] == stage) for stage in seconds}
    for name, outcome, message, stage in cases:
        _case(suite, label, name, outcome, message, seconds[stage] / shares[stage])


def junit_xml(report: dict, gate: dict | None = None) -> str:
    root = ET.Element("testsuites", name="edgeprep")
    target = (report.get("target") or {}).get("name", "none")
    suite = ET.SubElement(root, "testsuite", name=f"edgeprep.{report['command']}.{target}",
                          timestamp=report["created"])
    for a in report["artifacts"]:
        label = a["path"].rsplit("/", 1)[-1]
        if a.get("device"):
            label = f"{a['device']}/{label}"
        _artifact_cases(suite, a, label)
    _finish(suite)
    if gate is not None:
        gsuite = ET.SubElement(root, "testsuite", name=f"edgeprep.gate.{target}")
        rebench = gate.get("rebench") or {}
        for vd in gate["verdicts"]:
            outcome = {"pass": "passed", "fail": "failure", "error": "error"}[vd["status"]]
            compared = rebench.get(vd["artifact"]) if vd["check"] == "max_latency_regression_pct" else None
            seconds = compared.get("seconds", 0.0) if isinstance(compared, dict) else 0.0
            _case(gsuite, vd["artifact"], vd["check"], outcome, vd.get("detail", ""), seconds)
        _finish(gsuite)
    root.set("time", _time(sum(float(su.get("time")) for su in root.findall("testsuite"))))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
