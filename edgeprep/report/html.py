"""A one-file HTML report: open it anywhere, attach it to a CI run. Plots are matplotlib PNGs inlined as ``data:``
URIs, the style sheet is inline: the page loads nothing from anywhere.

What a reviewer reads, top to bottom: a verdict banner (the gate's when a gate was run, else the report's); one row
per artifact, coloured by its worst check, each gated value with its threshold beside it; one panel per gated
metric (size, top-1 accuracy, agreement, SQNR, latency) with this run, the baseline and the threshold; the latency
distributions; the gate's verdicts; per-layer SQNR of each int8 artifact (worst layers first, kept-float layers
marked); where the time goes (``bench --profile``); and the trend over the run history, one position per recorded
run, labelled by date and commit.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

from edgeprep.report.build import artifact_status
from edgeprep.report.markdown import _size, columns, headline, rows, status_cell

_CSS = """body{font-family:system-ui,sans-serif;margin:1em;color:#222;font-size:15px;line-height:1.35}
main{max-width:1240px}h1{font-size:1.45em;margin:.2em 0}h2{font-size:1.15em;margin:1.4em 0 .4em}
.banner{padding:.6em 1em;margin:.8em 0 1em;border-left:8px solid #999;border-radius:4px;font-size:1.15em}
.banner small{display:block;font-size:.8em;color:#333;margin-top:.25em}
.banner.pass{background:#e3f3e3;border-color:#2e7d32}.banner.fail{background:#fbdada;border-color:#c62828}
.banner.error{background:#fff0d6;border-color:#e65100}.banner.unchecked{background:#fff8cc;border-color:#a08a00}
table{border-collapse:collapse;margin:.4em 0 1.2em;font-size:.88em}th{background:#f3f3f3}
td,th{border:1px solid #ccc;padding:3px 5px;text-align:right;white-space:nowrap}
td:first-child,th:first-child,td.text,th.text{text-align:left}td.text{white-space:normal;max-width:34em}
tr.fail td{background:#fde4e4}tr.error td{background:#ffeed6}tr.pass td{background:#ecf7ec}
tr.unchecked td{background:#fffbe0}td.bad{color:#b00000;font-weight:600}td.err{color:#a04000;font-weight:600}
.limit{color:#555;font-size:.85em;margin-left:.3em;font-weight:normal}tr.kept td{font-style:italic}
.share{display:inline-block;height:.75em;background:#6a8fd8;margin-right:.4em;vertical-align:middle}
img{max-width:100%;display:block;margin:.3em 0 1em}small,.note{color:#555}"""

# a row's (and the banner's) class, worst first: what colours it is the worst check of the artifact
_ORDER = ("fail", "error", "unchecked", "pass")
_ARTIFACT_CLASS = {"failed": "fail", "verified": "pass", "measured": "unchecked", "unmeasured": "unchecked"}
_BANNER_CLASS = {"passed": "pass", "failed": "fail", "error": "error", "measured": "unchecked",
                 "unmeasured": "unchecked"}
_COLOUR = {"pass": "tab:green", "fail": "tab:red", "error": "tab:orange", None: "tab:blue"}


def _worst(classes) -> str:
    return min(classes, key=_ORDER.index, default="unchecked")


def _key(a: dict) -> str:
    """How the gate names an artifact (``edgeprep.gate``): its file name."""
    return Path(a["path"]).name


def _label(a: dict) -> str:
    return (f"{a['device']}: " if a.get("device") else "") + f"{a['format']} {a['precision']}"


# ---------------------------------------------------------------- checks: the verify's, or the gate's verdicts


@dataclass(frozen=True)
class Check:
    """One threshold judged on one artifact, as the table and the panels show it."""

    name: str
    status: str                      # pass | fail | error
    value: float | None = None
    threshold: float | None = None
    baseline: float | None = None
    interval: tuple[float, float] | None = None
    detail: str = ""


def _checks(a: dict, gate: dict | None) -> list[Check]:
    """What was judged on ``a``: the gate's verdicts when a gate was run (it re-judges every threshold), else the
    report's own threshold checks."""
    if gate is not None:
        return [Check(v["check"], v["status"], v.get("value"), v.get("threshold"), v.get("baseline"),
                      tuple(v["interval"]) if v.get("interval") else None, v.get("detail") or "")
                for v in gate["verdicts"] if v["artifact"] == _key(a)]
    return [Check(c["name"], "pass" if c["passed"] else "fail", c.get("value"), c.get("threshold"),
                  detail=c.get("detail") or "")
            for c in (a["verification"].get("checks") or [])]


def _row_class(a: dict, checks: list[Check], gated: bool) -> str:
    own = _ARTIFACT_CLASS.get(artifact_status(a["verification"]), "unchecked")
    if gated and checks:
        return _worst([c.status for c in checks] + (["fail"] if own == "fail" else []))
    return own


def _limit_text(c: Check) -> tuple[str, str] | None:
    """(column, the threshold as shown beside the value) of a check that has a column in the table."""
    t, v = c.threshold, c.value
    if t is None:
        return None
    if c.name == "max_size_bytes":
        return "size", f"≤ {_size(t)}"
    if c.name == "max_size_growth_pct" and v is not None:
        return "size", f"{v:+.1f} % ≤ +{t:g} %"
    if c.name == "max_accuracy_drop":
        return "drop (pts)", f"≤ {t:g}"
    if c.name == "min_agreement":
        return "agreement", f"≥ {t:g}"
    if c.name == "min_sqnr_db":
        return "SQNR dB", f"≥ {t:g}"
    if c.name == "max_accuracy_drop_vs_baseline" and c.baseline is not None:
        return "accuracy", f"≥ {c.baseline - t / 100:.4f}"
    if c.name == "max_latency_regression_pct" and v is not None:
        return "p50 ms", f"×{1 + v / 100:.2f} ≤ ×{1 + t / 100:.2f}"
    return None


def _artifact_table(report: dict, gate: dict | None) -> str:
    cols = columns(report)
    out = ["<table id='artifacts'><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in cols) + "</tr>"]
    for a, cells in zip(report["artifacts"], rows(report)):
        checks = _checks(a, gate)
        limits: dict[str, list[tuple[str, Check]]] = {}
        for c in checks:
            shown = _limit_text(c)
            if shown:
                limits.setdefault(shown[0], []).append((shown[1], c))
        tds = []
        for col, text in zip(cols, cells):
            if col == "status":
                status = status_cell(a["verification"])
                if gate is not None:
                    bad = [c.name for c in checks if c.status != "pass"]
                    status += (f" · gate: {', '.join(bad)}" if bad else f" · gate: {len(checks)} passed"
                               if checks else " · gate: nothing checked")
                tds.append(f"<td class='text status'>{html.escape(status)}</td>")
                continue
            here = limits.get(col, [])
            cls = " bad" if any(c.status == "fail" for _, c in here) else (
                " err" if any(c.status == "error" for _, c in here) else "")
            extra = "".join(f"<span class='limit' title='{html.escape(c.name)}: {html.escape(c.detail)}'>"
                            f"{html.escape(t)}</span>" for t, c in here)
            tds.append(f"<td class='value{cls}'>{html.escape(text)}{extra}</td>")
        out.append(f"<tr class='{_row_class(a, checks, gate is not None)}' data-artifact='{html.escape(_key(a))}'>"
                   + "".join(tds) + "</tr>")
    return "\n".join(out) + "</table>"


def _verdict_table(gate: dict) -> str:
    order = {"fail": 0, "error": 1, "pass": 2}
    out = ["<table id='verdicts'><tr><th>artifact</th><th>check</th><th>verdict</th><th>value</th>"
           "<th>baseline</th><th>threshold</th><th class='text'>detail</th></tr>"]
    for v in sorted(gate["verdicts"], key=lambda v: order.get(v["status"], 3)):
        cells = [v["artifact"], v["check"], v["status"]] + ["—" if v.get(k) is None else f"{v[k]:,.6g}"
                                                           for k in ("value", "baseline", "threshold")]
        out.append(f"<tr class='{html.escape(v['status'])}'>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                   + f"<td class='text'>{html.escape(v.get('detail') or '')}</td></tr>")
    return "\n".join(out) + "</table>"


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(buf.getvalue()).decode()}">')


@dataclass
class _Row:
    """One artifact on one metric panel: its value, the baseline's, the thresholds, the gate's interval."""

    label: str
    value: float
    baseline: float | None = None
    limits: list[float] = field(default_factory=list)
    status: str | None = None
    interval: tuple[float, float] | None = None


def _panel_rows(report: dict, gate: dict | None, baseline: dict | None) -> dict[str, list[_Row]]:
    """The rows of each metric panel. Every artifact with the metric is shown; thresholds and the baseline where
    they were judged."""
    base_by_key = {_key(b): b for b in (baseline or {}).get("artifacts", [])}
    panels: dict[str, list[_Row]] = {}
    for a in report["artifacts"]:
        m = a.get("metrics") or {}
        b = base_by_key.get(_key(a)) or {}
        bm = b.get("metrics") or {}
        by = {c.name: c for c in _checks(a, gate)}

        def status(*names):
            got = [by[n].status for n in names if n in by]
            return _worst(got) if got else None

        size = _Row(_label(a), a["size_bytes"] / 2**20, b["size_bytes"] / 2**20 if b.get("size_bytes") else None,
                    status=status("max_size_bytes", "max_size_growth_pct"))
        if "max_size_bytes" in by and by["max_size_bytes"].threshold is not None:
            size.limits.append(by["max_size_bytes"].threshold / 2**20)
        c = by.get("max_size_growth_pct")
        if c and c.threshold is not None and c.baseline:
            size.limits.append(c.baseline * (1 + c.threshold / 100) / 2**20)
        panels.setdefault("size", []).append(size)
        if m.get("accuracy") is not None:
            acc = _Row(_label(a), m["accuracy"], bm.get("accuracy"),
                       status=status("max_accuracy_drop", "max_accuracy_drop_vs_baseline"))
            c = by.get("max_accuracy_drop")
            if c and c.threshold is not None and m.get("accuracy_drop") is not None:   # float top-1 - threshold
                acc.limits.append(m["accuracy"] + (m["accuracy_drop"] - c.threshold) / 100)
            c = by.get("max_accuracy_drop_vs_baseline")
            if c and c.threshold is not None and c.baseline is not None:
                acc.limits.append(c.baseline - c.threshold / 100)
            panels.setdefault("accuracy", []).append(acc)
        for metric, check in (("agreement", "min_agreement"), ("sqnr_db", "min_sqnr_db")):
            if m.get(metric) is not None:
                c = by.get(check)
                panels.setdefault(metric, []).append(_Row(
                    _label(a), m[metric], bm.get(metric), [c.threshold] if c and c.threshold is not None else [],
                    status(check)))
        c = by.get("max_latency_regression_pct")
        if c and c.value is not None:
            panels.setdefault("latency", []).append(_Row(
                _label(a), 1 + c.value / 100, 1.0, [1 + c.threshold / 100] if c.threshold is not None else [],
                c.status, c.interval))
    return panels


_PANELS = {   # metric: (title, x label, axis from zero, how a value is printed)
    "size": ("Size", "MiB", True, "{:.2f} MiB"),
    "accuracy": ("Top-1 accuracy", "top-1 accuracy on the evaluation data", False, "{:.4f}"),
    "agreement": ("Agreement with the float model", "top-1 agreement", False, "{:.4f}"),
    "sqnr_db": ("Output SQNR against the float model", "dB", True, "{:.1f} dB"),
    "latency": ("Median latency against the baseline", "median latency / baseline median "
                "(bar: the gate's confidence interval)", False, "×{:.3f}"),
}


def metric_panel(metric: str, panel: list[_Row]) -> str:
    """A dot plot: one line per artifact; filled dot this run (coloured by its verdict), open diamond the baseline,
    red bar the threshold. Axes never zoom onto noise: sizes and SQNR start at zero, ratios and accuracies span
    at least a few points around every value and threshold."""
    plt = _pyplot()
    title, xlabel, from_zero, fmt = _PANELS[metric]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(panel) + 1.3))
    _plotted: set = set()        # what the legend already names
    xs = []
    for i, r in enumerate(panel):
        y = len(panel) - 1 - i
        if r.interval:
            lo, hi = r.interval
            ax.plot([lo, hi], [y, y], color=_COLOUR[r.status], lw=3, alpha=0.45, solid_capstyle="butt")
            xs += [lo, hi]
        if r.baseline is not None:
            ax.plot(r.baseline, y, "D", mfc="none", mec="grey", ms=8,
                    label=None if "base" in _plotted else "baseline")
            _plotted.add("base")
            xs.append(r.baseline)
        for lim in r.limits:
            ax.plot(lim, y, "|", color="tab:red", ms=22, mew=3, label=None if "lim" in _plotted else "threshold")
            _plotted.add("lim")
            xs.append(lim)
        ax.plot(r.value, y, "o", color=_COLOUR[r.status], ms=8,
                label=None if r.status in _plotted else ("this run" if r.status is None else f"this run: {r.status}"))
        _plotted.add(r.status)
        ax.annotate(fmt.format(r.value), (r.value, y), xytext=(0, 7), textcoords="offset points", ha="center",
                    fontsize=8)
        xs.append(r.value)
    lo, hi = min(xs), max(xs)
    if from_zero:
        ax.set_xlim(0, hi * 1.12 if hi > 0 else 1)
    else:
        span = max(hi - lo, {"latency": 0.2}.get(metric, 0.02))
        right = hi + 0.15 * span
        if metric in ("accuracy", "agreement"):       # a fraction: room for the marker at 1.0, no more
            right = min(right, max(hi, 1.0) + 0.05 * span)
        ax.set_xlim(lo - 0.15 * span, right)
    if metric == "latency":
        ax.axvline(1.0, color="grey", lw=1, alpha=0.6)
    ax.set_ylim(-0.7, len(panel) - 0.3)
    ax.set_yticks(range(len(panel)), [r.label for r in reversed(panel)])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _png(fig, f"{title}: this run, the baseline and the threshold per artifact")


def latency_plot(latencies: dict[str, list[list[float]]]) -> str:
    """Box plots of each artifact's latency per inference (all processes pooled), the axis cut at the largest
    p99 so that a few outliers cannot squeeze the boxes: how many lie beyond it is said, with the maximum."""
    import numpy as np

    plt = _pyplot()
    names = list(latencies)[::-1]           # the first artifact at the top, as in the table
    pooled = [np.concatenate([np.asarray(g, float) for g in latencies[n]]) for n in names]
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(names) + 1.5))
    ax.boxplot(pooled, orientation="horizontal", whis=(1, 99), showfliers=False, tick_labels=names)
    right = max(float(np.percentile(p, 99)) for p in pooled) * 1.15
    beyond = sum(int(np.count_nonzero(p > right)) for p in pooled)
    for i, p in enumerate(pooled, start=1):
        ax.annotate(f"p50 {np.median(p):.3g} ms", (float(np.median(p)), i), xytext=(0, 12),
                    textcoords="offset points", ha="center", fontsize=8)
    ax.set_xlim(0, right)
    note = f"; {beyond} samples beyond {right:.3g} ms not shown (max {max(p.max() for p in pooled):.3g} ms)" \
        if beyond else ""
    ax.set_xlabel(f"latency per inference (ms); box p25-p75, whiskers p1-p99{note}")
    ax.set_title("Latency distribution")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig, "latency distribution per artifact")


def _layer_rows(a: dict) -> tuple[list[dict], str] | None:
    """Per-layer SQNR of an artifact (worst first) as rows {name, op, sqnr_db, delta, kept}, and where it comes
    from; None when the report has none for it."""
    kept = set((a.get("quantization") or {}).get("kept_float") or []) | set(
        (a.get("keep_float") or {}).get("kept_float") or [])
    lerr = a.get("layer_errors") or {}
    if lerr.get("status") == "measured" and lerr.get("layers"):
        out = [{"name": r["name"], "op": r["op"], "sqnr_db": r["sqnr_db"], "delta": r.get("sqnr_delta_db"),
                "kept": r["node"] in kept or r["name"] in kept} for r in lerr["layers"]]
        return sorted(out, key=lambda r: r["sqnr_db"]), f"{lerr['samples']} samples, against {lerr.get('reference')}"
    ref = a["verification"].get("layers") or {}
    if ref.get("layers"):      # Core ML: edgeprep's reference executor
        out = [{"name": r["layer"], "op": r["tensor"], "sqnr_db": r["sqnr_db"], "delta": None,
                "kept": r["layer"] in kept} for r in ref["layers"]]
        return sorted(out, key=lambda r: r["sqnr_db"]), f"{ref['samples']} samples, reference executor"
    return None


LAYERS_SHOWN = 25


def layer_plot(a: dict, layers: list[dict], where: str) -> str:
    plt = _pyplot()
    shown = layers[:LAYERS_SHOWN]
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(shown) + 1.4))
    ys = range(len(shown))
    bars = ax.barh(ys, [r["sqnr_db"] for r in shown], color=["#bbbbbb" if r["kept"] else "tab:blue" for r in shown],
                   edgecolor=["#555555" if r["kept"] else "none" for r in shown])
    for bar, r in zip(bars, shown):
        if r["kept"]:
            bar.set_hatch("//")
    ax.set_yticks(list(ys), [f"{r['name'][:48]} ({r['op']})" + ("  [kept float]" if r["kept"] else "")
                             for r in shown], fontsize=8)
    ax.invert_yaxis()
    output = (a.get("metrics") or {}).get("sqnr_db")
    if output is not None:
        ax.axvline(output, color="tab:red", ls="--", lw=1, label=f"model output {output:.1f} dB")
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xlim(0, max([r["sqnr_db"] for r in shown] + [output or 0]) * 1.1)
    ax.set_xlabel(f"SQNR of the layer's output against the float model (dB, higher is better; {where})")
    more = f", worst {len(shown)} of {len(layers)}" if len(layers) > len(shown) else ""
    ax.set_title(f"Per-layer SQNR: {_label(a)} ({Path(a['path']).name}{more})")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig, f"per-layer SQNR of {_key(a)}, worst first")


def _layer_section(a: dict) -> str | None:
    got = _layer_rows(a)
    if got is None:
        return None
    layers, where = got
    kept = [r["name"] for r in layers if r["kept"]]
    rows_ = [f"<tr class='{'kept' if r['kept'] else ''}'><td class='text'>{html.escape(r['name'])}</td>"
             f"<td>{html.escape(r['op'])}</td><td>{r['sqnr_db']:.1f}</td>"
             f"<td>{'—' if r['delta'] is None else format(r['delta'], '+.2f')}</td>"
             f"<td>{'kept float' if r['kept'] else 'int8'}</td></tr>" for r in layers[:8]]
    return (f"<h2>Per-layer error: {html.escape(_label(a))}</h2>"
            + (f"<p class='note'>kept in float: {html.escape(', '.join(kept))}</p>" if kept else "")
            + layer_plot(a, layers, where)
            + "<table class='layers'><tr><th>layer (worst first)</th><th>op</th><th>SQNR dB</th>"
              "<th>lost here dB</th><th>runs in</th></tr>" + "".join(rows_) + "</table>")


def _profile_section(report: dict) -> str | None:
    parts = []
    for a in report["artifacts"]:
        p = (a.get("bench") or {}).get("profile")
        if not p:
            continue
        name = html.escape(f"{_label(a)} ({_key(a)})")
        if not p.get("available"):
            parts.append(f"<p class='note'>{name}: no per-op profile: {html.escape(p.get('reason', ''))}</p>")
            continue
        types = "".join(f"<tr><td>{html.escape(t['type'])}</td><td>{t['count']}</td><td>{t['ms']:.4f}</td>"
                        f"<td><span class='share' style='width:{100 * t['share']:.0f}px'></span>{t['share']:.1%}"
                        "</td></tr>" for t in p["by_type"][:10])
        slow = "".join(f"<tr><td class='text'>{html.escape(n['node'])}</td><td>{html.escape(n['type'])}</td>"
                       f"<td>{n['ms']:.4f}</td></tr>" for n in p.get("slowest", [])[:6])
        parts.append(f"<p>{name}: {p['total_ms']:.4g} ms per inference counted by {html.escape(p.get('source', ''))}"
                     f" over {p.get('runs', '?')} runs</p>"
                     "<table class='profile'><tr><th>op type</th><th>nodes</th><th>ms</th><th>share</th></tr>"
                     f"{types}</table><table class='profile'><tr><th>slowest node</th><th>op type</th><th>ms</th>"
                     f"</tr>{slow}</table>")
    return ("<section id='profile'><h2>Where the time goes</h2>" + "\n".join(parts) + "</section>"
            if parts else None)


def trend_axis(trend: list[dict]) -> tuple[list[str], dict[str, list[tuple[int, float]]]]:
    """The trend's x axis and series: one integer position per recorded run, oldest first, labelled with its date
    and short commit (or tag); per artifact name the (position, median latency ms) of each run that has one."""
    runs: dict[int, dict] = {}
    for r in trend:
        runs.setdefault(r["run_id"], r)
    order = sorted(runs)
    pos = {rid: i for i, rid in enumerate(order)}
    series: dict[str, list[tuple[int, float]]] = {}
    for r in trend:
        if r.get("p50_ms") is not None:
            series.setdefault(r["name"], []).append((pos[r["run_id"]], r["p50_ms"]))
    return [_run_label(runs[rid]) for rid in order], series


def trend_plot(trend: list[dict]) -> str | None:
    """Median latency of each artifact over the recorded runs (``trend_axis``)."""
    labels, series = trend_axis(trend)
    if not any(len(s) > 1 for s in series.values()):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    for name, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    step = max(1, len(labels) // 12)
    ticks = list(range(0, len(labels), step))
    ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=8)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("recorded run (date, commit)")
    ax.set_ylabel("median latency (ms)")
    ax.set_title("Trend over the run history")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.3)
    return _png(fig, "median latency over the recorded runs, by date and commit")


def _run_label(r: dict) -> str:
    rev = r.get("tag") or (r.get("commit_sha") or "")[:7] or "no commit"
    return f"{(r.get('created') or '?')[:10]}\n{rev}"


# ---------------------------------------------------------------- the page


def _banner(report: dict, gate: dict | None) -> str:
    word, text = headline(report)
    if gate is None:
        cls = _BANNER_CLASS.get(report["summary"].get("status"), "unchecked")
        return f"<div id='verdict' class='banner {cls}'><b>{html.escape(word)}</b>: {html.escape(text)}</div>"
    n = gate["counts"]
    return (f"<div id='verdict' class='banner {_BANNER_CLASS.get(gate['status'], 'error')}'>"
            f"<b>GATE {html.escape(gate['status'].upper())}</b>: {n['fail']} regressed, {n['error']} could not be "
            f"judged, {n['pass']} passed, against {html.escape(str(gate.get('baseline', 'the baseline')))}"
            f"<small><b>{html.escape(word)}</b>: {html.escape(text)}</small></div>")


def html_report(report: dict, directory: Path, *, baseline: dict | None = None, gate: dict | None = None,
                trend: list[dict] | None = None) -> str:
    from edgeprep.report.latencies import read_latencies

    model = (report.get("model") or {}).get("path", "benchmark of existing artifacts")
    target = (report.get("target") or {}).get("name", "")
    parts = [f"<h1>edgeprep report: {html.escape(model)}{' → ' + html.escape(target) if target else ''}</h1>",
             f"<p><small>{report['created']} · command {report['command']} · schema "
             f"{report['schema_version']}</small></p>",
             _banner(report, gate), _artifact_table(report, gate)]
    layers = [s for s in (_layer_section(a) for a in report["artifacts"] if a["precision"] == "int8") if s]
    if report["command"] == "quantize":      # per-layer error is what quantize is for: first
        parts += layers
    panels = _panel_rows(report, gate, baseline)
    if panels:
        parts.append("<h2>" + ("What was gated, against the baseline" if gate else "Measured values and thresholds")
                     + "</h2>")
        parts += [metric_panel(metric, panels[metric]) for metric in _PANELS if panels.get(metric)]
    latencies = read_latencies(report, directory)
    if latencies:
        parts.append(latency_plot(latencies))
    if gate is not None:
        parts += [f"<h2>Gate verdicts ({html.escape(gate['status'])})</h2>", _verdict_table(gate)]
    if report["command"] != "quantize":
        parts += layers
    profile = _profile_section(report)
    if profile:
        parts.append(profile)
    plot = trend_plot(trend or [])
    if plot:
        parts += ["<h2>History</h2>", plot]
    tc = report["toolchain"]
    parts.append(f"<p><small>edgeprep {tc['edgeprep']} · {html.escape(tc['os'])} · "
                 f"{html.escape(tc['cpu']['model'])}</small></p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>edgeprep report</title><style>{_CSS}</style></head><body><main>\n" + "\n".join(parts)
            + "\n</main></body></html>\n")
