"""Human-readable views of a report: table rows shared by the Markdown summary and the terminal table."""

from __future__ import annotations

from edgeprep.report.build import artifact_status, checks_count, summary_of

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
        status = status_cell(v)
        name = f"{a['format']} {a['precision']}"
        out.append((f"{a['device']}: {name}" if a.get("device") else name, _size(a["size_bytes"]), ratio,
                    _fmt(m.get("accuracy"), ".4f"), _fmt(m.get("accuracy_drop"), "+.2f"),
                    _fmt(m.get("agreement"), ".4f"), _fmt(m.get("sqnr_db"), ".1f"))
                   + (_bench_cells(a, compact) if benched(report) else ()) + (status,))
    return out


def _checks(n: int) -> str:
    return f"{n} check{'' if n == 1 else 's'}"


def status_cell(verification: dict) -> str:
    """An artifact's status in the table: "verified (4 checks)", "measured (no thresholds)", "unmeasured",
    "failed (min_agreement)"."""
    status, n = artifact_status(verification), checks_count(verification)
    if status == "failed":
        failed = [c["name"] for c in verification.get("checks", []) if not c["passed"]]
        return f"failed ({', '.join(failed)})" if failed else "failed"
    if status == "verified":
        return f"verified ({_checks(n)})"
    if status == "measured":
        return f"measured ({_checks(n) if n else 'no thresholds'})"
    return status


HEADLINE_WORDS = {"passed": "VERIFIED", "measured": "MEASURED", "unmeasured": "UNMEASURED", "failed": "FAILED"}


def headline(report: dict) -> tuple[str, str]:
    """The report's verdict in words, as (status word, sentence): "VERIFIED", "3 artifacts verified against 12
    thresholds, every one passed." — never a pass for what was not checked."""
    s = summary_of(report)
    total, n = s["artifacts"], s.get("thresholds_checked", 0)
    counts = [(k, s[k]) for k in ("failed", "unmeasured", "measured", "verified") if s.get(k)]
    if not counts:
        what = "no artifacts"
    elif len(counts) == 1:
        what = f"{total} artifact{'' if total == 1 else 's'} {counts[0][0]}"
    else:
        what = ", ".join(f"{c} {k}" for k, c in counts) + f" of {total} artifacts"
    threshold = f"{n} threshold{'' if n == 1 else 's'}"
    if s["status"] == "passed":
        text = f"{what} against {threshold}, every one passed."
    else:
        text = f"{what}; {threshold + ' checked' if n else 'no thresholds checked'}"
        if any(artifact_status(v) == "measured" and not checks_count(v) and not v.get("reason")   # else: why
               for v in (a["verification"] for a in report["artifacts"])):
            text += (" (set [gates] in the target to verify)" if report.get("target") or report.get("fleet")
                     else " (give --target or set [gates] to verify)")
        text += "."
    return HEADLINE_WORDS.get(s["status"], s["status"].upper()), text


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


PROFILE_TYPES = 5     # op types listed per profiled artifact


def profile_lines(report: dict) -> list[str]:
    """Where the time goes (``bench --profile``): per profiled artifact, the op types with the largest shares as
    a short table and the slowest node; or why the runtime keeps no per-op times."""
    out = []
    for a in report["artifacts"]:
        p = (a.get("bench") or {}).get("profile")
        if not p:
            continue
        name = f"{_where(a)}{a['format']} {a['precision']}"
        if not p.get("available"):
            out += ["", f"No per-op profile for {name}: {p.get('reason', 'not available')}."]
            continue
        slow = (p.get("slowest") or [None])[0]
        out += ["", f"Where the time goes, {name}: {p['total_ms']:.3g} ms per inference counted by "
                    f"{p.get('source', 'the runtime')} over {p.get('runs', '?')} runs"
                    + (f"; slowest node `{slow['node']}` ({slow['type']}, {slow['ms']:.3g} ms)." if slow else "."),
                "", "| op type | nodes | ms | share |", "|---|---:|---:|---:|"]
        out += [f"| {t['type']} | {t['count']} | {t['ms']:.4f} | {t['share']:.1%} |"
                for t in p["by_type"][:PROFILE_TYPES]]
        if len(p["by_type"]) > PROFILE_TYPES:
            rest = p["by_type"][PROFILE_TYPES:]
            out.append(f"| {len(rest)} other types | {sum(t['count'] for t in rest)} | "
                       f"{sum(t['ms'] for t in rest):.4f} | {sum(t['share'] for t in rest):.1%} |")
    return out


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
    lines += profile_lines(report)
    lines += _fleet_lines(report)
    word, text = headline(report)
    tc = report["toolchain"]
    lines += ["", f"**{word}**: {text}", "",
              f"<sub>edgeprep {tc['edgeprep']}, TensorFlow {tc.get('tensorflow')}, LiteRT {tc.get('litert')}, "
              f"OpenVINO {tc.get('openvino')}, coremltools {tc.get('coremltools')}, NNCF {tc.get('nncf')}, "
              f"numpy {tc.get('numpy')} on {tc['os']}, {tc['cpu']['model']}</sub>", ""]
    return "\n".join(lines)
