"""A one-file HTML report with plots (PNG embedded as base64): open it anywhere, attach it to a CI run.

Plots: the latency distribution of each benchmarked artifact; size vs accuracy vs latency across artifacts; and,
when a baseline or a run history is given, median latency against the baseline (with the gate's confidence
interval) and its trend over the recorded runs.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from edgeprep.report.build import artifact_status
from edgeprep.report.markdown import columns, headline, rows

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.fail{background:#fdd}.error{background:#fec}.pass{background:#efe}
.unchecked{background:#ffd}
img{max-width:100%;display:block;margin:1em 0}small{color:#666}"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_plot(latencies: dict[str, list[list[float]]]) -> str:
    plt = _pyplot()
    names = list(latencies)
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(names) + 1.5))
    pooled = [[v for group in latencies[n] for v in group] for n in names]
    ax.boxplot(pooled, vert=False, whis=(1, 99), showfliers=True, tick_labels=names,
               flierprops={"markersize": 2})
    ax.set_xlabel("latency per inference (ms); box: p25-p75, whiskers: p1-p99")
    ax.set_title("Latency distribution")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def tradeoff_plot(report: dict) -> str | None:
    """Size (marker area) vs accuracy (y) vs median latency (x), one point per artifact."""
    points = []
    for a in report["artifacts"]:
        b, m = a.get("bench") or {}, a.get("metrics") or {}
        acc = m.get("accuracy") if m.get("accuracy") is not None else m.get("agreement")
        if b.get("status") == "ok" and acc is not None:
            name = (f"{a['device']}/" if a.get("device") else "") + Path(a["path"]).name
            points.append((name, b["latency_ms"]["p50"], acc, a["size_bytes"]))
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    biggest = max(p[3] for p in points)
    for name, lat, acc, size in points:
        ax.scatter(lat, acc, s=40 + 800 * size / biggest, alpha=0.6)
        ax.annotate(f"{name}\n{size / 2**20:.2f} MiB", (lat, acc), fontsize=8, xytext=(6, 6),
                    textcoords="offset points")
    ax.set_xlabel("median latency (ms)")
    ax.set_ylabel("top-1 accuracy (agreement when unlabelled)")
    ax.set_title("Size (marker area) vs accuracy vs latency", pad=14)
    ax.margins(0.2)
    ax.grid(alpha=0.3)
    return _png(fig)


def baseline_plot(gate: dict) -> str | None:
    lat = [v for v in gate["verdicts"] if v["check"] == "max_latency_regression_pct" and v["interval"]]
    if not lat:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(lat) + 1.5))
    for i, v in enumerate(lat):
        point = 1 + v["value"] / 100
        lo, hi = v["interval"]
        colour = "tab:red" if v["status"] == "fail" else "tab:green"
        ax.errorbar(point, i, xerr=[[point - lo], [hi - point]], fmt="o", color=colour, capsize=4)
        ax.axvline(1 + v["threshold"] / 100, color="tab:red", ls=":", alpha=0.5)
    ax.axvline(1.0, color="grey", lw=1)
    ax.set_yticks(range(len(lat)), [v["artifact"] for v in lat])
    ax.set_xlabel("median latency / baseline median (interval: bootstrap; dotted: threshold)")
    ax.set_title("Against the baseline")
    return _png(fig)


def trend_plot(trend: list[dict]) -> str | None:
    series: dict[str, list[tuple[int, float]]] = {}
    for r in trend:
        if r.get("p50_ms") is not None:
            series.setdefault(r["name"], []).append((r["run_id"], r["p50_ms"]))
    if not any(len(s) > 1 for s in series.values()):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    for name, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("recorded run (history id)")
    ax.set_ylabel("median latency (ms)")
    ax.set_title("Trend over the run history")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


_ROW_CLASS = {"failed": "fail", "verified": "pass", "measured": "unchecked", "unmeasured": "unchecked"}


def _table(head: tuple[str, ...], body: list[tuple], classes: list[str] | None = None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>"]
    for i, r in enumerate(body):
        cls = f' class="{classes[i]}"' if classes else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    return "\n".join(out) + "</table>"


def html_report(report: dict, directory: Path, *, baseline: dict | None = None, gate: dict | None = None,
                trend: list[dict] | None = None) -> str:
    from edgeprep.report.latencies import read_latencies

    model = (report.get("model") or {}).get("path", "benchmark of existing artifacts")
    target = (report.get("target") or {}).get("name", "")
    word, text = headline(report)
    parts = [f"<h1>edgeprep report: {html.escape(model)}{' → ' + html.escape(target) if target else ''}</h1>",
             f"<p><small>{report['created']} · command {report['command']} · schema "
             f"{report['schema_version']}</small></p>",
             f"<p><b>{html.escape(word)}</b>: {html.escape(text)}</p>",
             _table(columns(report), rows(report), [_ROW_CLASS.get(artifact_status(a["verification"]), "")
                                                     for a in report["artifacts"]])]
    if gate is not None:
        parts.append(f"<h2>Gate: {gate['status']}</h2>")
        body = [(v["artifact"], v["check"], v["status"], v["detail"]) for v in gate["verdicts"]]
        parts.append(_table(("artifact", "check", "verdict", "detail"), body, [v["status"] for v in gate["verdicts"]]))
    latencies = read_latencies(report, directory)
    if latencies:
        parts.append(latency_plot(latencies))
    for plot in (tradeoff_plot(report), baseline_plot(gate) if gate else None, trend_plot(trend or [])):
        if plot:
            parts.append(plot)
    tc = report["toolchain"]
    parts.append(f"<p><small>edgeprep {tc['edgeprep']} · {html.escape(tc['os'])} · "
                 f"{html.escape(tc['cpu']['model'])}</small></p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>edgeprep report</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
