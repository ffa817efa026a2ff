"""Human-readable views of a report: table rows shared by the Markdown summary and the terminal table."""

from __future__ import annotations

COLUMNS = ("artifact", "size", "vs fp32", "accuracy", "drop (pts)", "agreement", "SQNR dB", "status")
BENCH_COLUMNS = ("p50 ms", "p99 ms", "load ms", "peak RSS")   # shown when any artifact was benchmarked
COMPACT = (0, 3)                                               # the bench columns a 120-column terminal shows


def benched(report: dict) -> bool:
    return any(a.get("bench") for a in report["artifacts"])


def _pick(cells: tuple[str, ...], compact: bool) -> tuple[str, ...]:
    return tuple(cells[i] for i in COMPACT) if compact else cells


def columns(report: dict, compact: bool = False) -> tuple[str, ...]:
    return COLUMNS[:-1] + _pick(BENCH_COLUMNS, compact) + COLUMNS[-1:] if benched(report) else COLUMNS


EMULATED_MARK = "ᵉ"
EMULATED_NOTE = (f"{EMULATED_MARK} measured under emulation (qemu-user): accuracy and numerics come from the "
                 "real ARM kernels, latency and memory are not representative of the hardware")


def emulated(a: dict) -> bool:
    return bool(((a.get("bench") or {}).get("device") or {}).get("emulated"))


def _bench_cells(a: dict, compact: bool = False) -> tuple[str, ...]:
    b = a.get("bench") or {}
    if b.get("status") != "ok":
        cells = ("—", "—", "—", "—") if not b else (b["status"], "—", "—", "—")
    else:
        lat = b["latency_ms"]
        mark = EMULATED_MARK if emulated(a) else ""
        cells = (f"{lat['p50']:.3f}{mark}", f"{lat['p99']:.3f}{mark}", f"{b['load_ms']:.0f}{mark}",
                 _size(b["peak_rss_bytes"]) + mark)
    return _pick(cells, compact)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def rows(report: dict, compact: bool = False) -> list[tuple[str, ...]]:
    """One row per artifact, in ``columns(report)`` order, formatted for people."""
    fp32 = {(a.get("device"), a["format"]): a["size_bytes"] for a in report["artifacts"] if a["precision"] == "fp32"}
    out = []
    for a in report["artifacts"]:
        m = a.get("metrics") or {}
        v = a["verification"]
        key = (a.get("device"), a["format"])
        ratio = f"{a['size_bytes'] / fp32[key]:.3f}×" if key in fp32 else "—"
        status = v["status"]
        failed = [c["name"] for c in v.get("checks", []) if not c["passed"]]
        if failed:
            status += f" ({', '.join(failed)})"
        name = f"{a['format']} {a['precision']}"
        out.append((f"{a['device']}: {name}" if a.get("device") else name, _size(a["size_bytes"]), ratio,
                    _fmt(m.get("accuracy"), ".4f"), _fmt(m.get("accuracy_drop"), "+.2f"),
                    _fmt(m.get("agreement"), ".4f"), _fmt(m.get("sqnr_db"), ".1f"))
                   + (_bench_cells(a, compact) if benched(report) else ()) + (status,))
    return out


def _batchnorm_lines(report: dict) -> list[str]:
    """One line each for the BN calibration and fold sections, when the run has them."""
    out = []
    cal, fold = report.get("calibration") or {}, report.get("fold") or {}
    if "summary" in cal:
        s = cal["summary"]
        line = (f"- BatchNorm calibration ({cal['method']}, {cal['samples']} samples): {s['layers']} layers, "
                + ", ".join(f"{s[v]} {v}" for v in ("ok", "stale", "noisy", "broken") if s[v]))
        acc = cal.get("accuracy")
        if acc:
            line += f"; top-1 {acc['before']:.4f} → {acc['after']:.4f}"
        out.append(line)
    if "folded" in fold:
        out.append(f"- BatchNorm folding: {fold['message']}")
    return [""] + out if out else []


def _where(a: dict) -> str:
    return f"{a['device']}: " if a.get("device") else ""


def device_metric_lines(report: dict) -> list[str]:
    """Accuracy measured on the device itself (edgeprep run on an emulated or ssh device)."""
    out = []
    for a in report["artifacts"]:
        b = a.get("bench") or {}
        m, dev = b.get("metrics"), b.get("device") or {}
        if b.get("status") == "ok" and m:
            where = f"{dev.get('machine', '?')}{', emulated' if dev.get('emulated') else ''}, {dev.get('transport')}"
            out.append(f"- {_where(a)}{a['format']} {a['precision']} on the device ({where}): top-1 "
                       f"{_fmt(m.get('accuracy'), '.4f')}, agreement {_fmt(m.get('agreement'), '.4f')}, SQNR "
                       f"{_fmt(m.get('sqnr_db'), '.1f')} dB vs the float model, {m['samples']} samples")
    return [""] + out if out else []


def _fleet_lines(report: dict) -> list[str]:
    """One line per device of a fleet report: what happened there and how long it took."""
    fleet = report.get("fleet")
    if not fleet:
        return []
    out = ["", f"Devices ({len(fleet['targets'])}, benchmarked in parallel on {fleet['lanes']} lane(s); "
               f"wall {fleet['wall_seconds']:.1f} s, {fleet['sum_seconds']:.1f} s one after another):"]
    for t in fleet["targets"]:
        dev = t.get("device") or {}
        where = ", ".join(str(dev[k]) for k in ("machine", "transport") if dev.get(k))
        out.append(f"- {t['name']}{f' ({where})' if where else ''}: {t['status']}, {t['seconds']:.1f} s"
                   + (f" — {t['error']}" if t.get("error") else ""))
    return out


def markdown_summary(report: dict) -> str:
    model = report.get("model") or {"path": "benchmark of existing artifacts"}
    target = report.get("target") or {}
    ref = report.get("reference") or {}
    lines = [f"# edgeprep report: {model['path']}" + (f" → {target['name']}" if target else ""), ""]
    if ref:
        acc = ref.get("accuracy")
        lines.append(f"Float reference: top-1 {acc:.4f} on {ref['samples']} samples."
                     if acc is not None else f"Float reference: {ref['samples']} unlabelled samples.")
        lines.append("")
    cols = columns(report)
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in rows(report):
        lines.append("| " + " | ".join(r) + " |")
    lines += _batchnorm_lines(report)
    notes = [(_where(a) + a["format"], a["precision"], a["verification"].get("reason"))
             for a in report["artifacts"] if a["verification"].get("reason")]
    for a in report["artifacts"]:
        v = a["verification"]
        if (v.get("executed_by") or {}).get("reference_executor"):
            layers = v.get("layers") or {}
            worst = next((r for r in layers.get("layers", []) if r["layer"] == layers.get("worst")), None)
            worst_text = f"; worst layer {worst['layer']} at {worst['sqnr_db']:.1f} dB SQNR" if worst else ""
            notes.append((_where(a) + a["format"], a["precision"],
                          "numerics from edgeprep's reference executor (numpy), not Core ML itself" + worst_text))
    if notes:
        lines.append("")
        lines += [f"- {f} {p}: {reason}" for f, p, reason in notes]
    if any(emulated(a) for a in report["artifacts"]):
        lines += ["", EMULATED_NOTE]
    lines += device_metric_lines(report)
    lines += _fleet_lines(report)
    s = report["summary"]
    tc = report["toolchain"]
    lines += ["", f"**{s['status'].upper()}**: {s['verified']} verified, {s['unverified']} unverified, "
                  f"{s['failed']} failed of {s['artifacts']} artifacts.", "",
              f"<sub>edgeprep {tc['edgeprep']}, TensorFlow {tc.get('tensorflow')}, LiteRT {tc.get('litert')}, "
              f"OpenVINO {tc.get('openvino')}, coremltools {tc.get('coremltools')}, NNCF {tc.get('nncf')}, "
              f"numpy {tc.get('numpy')} on {tc['os']}, {tc['cpu']['model']}</sub>", ""]
    return "\n".join(lines)
