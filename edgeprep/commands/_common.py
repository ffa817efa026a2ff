"""Pieces shared by the commands: preprocessing options, the progress reporter, the result table, exit codes."""

from __future__ import annotations

import click

EXIT_OK, EXIT_FAILED_CHECK, EXIT_ERROR, EXIT_BUG = 0, 1, 2, 3


def make_reporter(ctx: click.Context):
    from edgeprep.progress import Reporter

    return Reporter(quiet=(ctx.obj or {}).get("quiet", False))


def complete_target(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    """Shell completion of ``--target`` and ``--targets``: the profile names on the search path ($EDGEPREP_TARGETS,
    ./targets, shipped); a word that looks like a path completes as a file. ``--targets a,b,`` completes the name
    after the last comma."""
    from click.shell_completion import CompletionItem

    head, _, word = incomplete.rpartition(",") if param.name == "targets_csv" else ("", "", incomplete)
    if not head and ("/" in word or word.startswith(".") or word.endswith(".toml")):
        return [CompletionItem(incomplete, type="file")]
    try:
        from edgeprep.targets import available

        names = sorted(available())
    except Exception:       # a completion never prints a traceback into the user's prompt
        return []
    taken = set(head.split(",")) if head else set()
    prefix = f"{head}," if head else ""
    return [CompletionItem(prefix + n) for n in names if n.startswith(word) and n not in taken]


def _floats(value: str | None, name: str, count: int | None = None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}", param_hint=name) from None
    if count is not None and len(parts) != count:
        raise click.BadParameter(f"expected {count} comma-separated values, got {value!r}", param_hint=name)
    return parts


def preprocess_options(f):
    """Options that set preprocessing on the command line (they win over the target and data manifest)."""
    opts = [
        click.option("--resize", metavar="H,W", help="Resize samples to H x W (bilinear)."),
        click.option("--channels", type=click.Choice(["1", "3"]), help="Convert samples to 1 (grey) or 3 (RGB) "
                     "channels."),
        click.option("--scale", type=float, help="Multiply pixel values by this (e.g. 0.00392156862745098 for "
                     "1/255)."),
        click.option("--offset", type=float, help="Then add this."),
        click.option("--mean", metavar="M[,M,M]", help="Then subtract this per-channel mean ..."),
        click.option("--std", metavar="S[,S,S]", help="... and divide by this per-channel std."),
        click.option("--layout", type=click.Choice(["NHWC", "NCHW"]), help="Layout the model expects (data is "
                     "read as NHWC)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def data_options(f):
    """``--calibrate/--no-calibrate`` and ``--split``: shared by run, quantize and convert."""
    f = click.option("--split", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), metavar="FRACTION",
                     help="Hold out FRACTION of --data (per class, fixed seed) for evaluation; the rest calibrates "
                          "(and fine-tunes). Use it when one folder is all the data you have: otherwise the "
                          "figures are measured on the samples that tuned the artifact.")(f)
    f = click.option("--calibrate/--no-calibrate", "recalibrate", default=None,
                     help="Re-estimate BatchNorm statistics on the calibration data before converting (default: "
                          "the target's [calibrate] enabled). The recalibrated model is the float reference.")(f)
    return f


def with_calibrate(target, recalibrate: bool | None):
    """``target`` with ``--calibrate/--no-calibrate`` applied (None: as the profile says)."""
    from dataclasses import replace

    if recalibrate is None or target.calibrate.enabled == recalibrate:
        return target
    return replace(target, calibrate=replace(target.calibrate, enabled=recalibrate))


def collect_preprocess(kw: dict) -> dict:
    """Pop the preprocessing options from a command's kwargs into a ``[preprocess]``-shaped dict."""
    out: dict = {}
    resize = kw.pop("resize", None)
    if resize is not None:
        out["resize"] = [int(v) for v in _floats(resize, "--resize", 2)]
    channels = kw.pop("channels", None)
    if channels is not None:
        out["channels"] = int(channels)
    for key in ("scale", "offset"):
        v = kw.pop(key, None)
        if v is not None:
            out[key] = v
    for key in ("mean", "std"):
        v = _floats(kw.pop(key, None), f"--{key}")
        if v is not None:
            out[key] = list(v)
    layout = kw.pop("layout", None)
    if layout is not None:
        out["layout"] = layout
    return out


def print_table(report: dict) -> None:
    """The result table, the reasons for what was not measured, and the verdict: "VERIFIED: ... against N
    thresholds" only when thresholds were checked and passed, else MEASURED, UNMEASURED or FAILED. Under GitHub
    Actions also the job summary and an annotation per failed check (``edgeprep.commands._ci``)."""
    from rich.table import Table

    from edgeprep.commands._ci import report_to_ci
    from edgeprep.progress import result_console, styled
    from edgeprep.report.markdown import EMULATED_NOTE, columns, device_metric_lines, emulated, headline, rows

    console = result_console()      # reads no markup: paths, names and messages are shown as they are
    ref = report.get("reference") or {}
    title = f"{(report.get('model') or {}).get('path', 'benchmark of existing artifacts')}"
    if ref.get("accuracy") is not None:
        title += f" — float top-1 {ref['accuracy']:.4f} on {ref['samples']} samples"
    table = Table(title=title, title_justify="left")
    cols = columns(report, compact=True)
    for i, col in enumerate(cols):
        table.add_column(col, justify="left" if i in (0, len(cols) - 1) else "right", no_wrap=i == 0)
    for r in rows(report, compact=True):
        style = "red" if r[-1].startswith("failed") else ("yellow" if r[-1] == "unmeasured" else None)
        table.add_row(*r, style=style)
    console.print(table)
    for a in report["artifacts"]:
        reason = a["verification"].get("reason")
        if reason:
            where = f"{a['device']}: " if a.get("device") else ""
            console.print(styled((f"{where}{a['format']} {a['precision']}:", "yellow"), f" {reason}"))

    for line in device_metric_lines(report)[1:]:
        console.print(line)
    if any(emulated(a) for a in report["artifacts"]):
        console.print(styled((EMULATED_NOTE, "yellow")))
    for t in (report.get("fleet") or {}).get("targets", []):
        if t.get("error"):
            console.print(styled((f"{t['name']}:", "red"), f" {t['error']}"))
    word, text = headline(report)
    colour = {"VERIFIED": "green", "FAILED": "red"}.get(word, "yellow")
    console.print(styled((word, f"bold {colour}"), f": {text}"))
    report_to_ci(report)


def record_history(reports: list, history_path, reporter) -> None:
    """Record ``(report, report.json path)`` pairs in the run history (``run`` and ``bench``) and say where, in one
    line: ``history: PATH``. A history that cannot be written is a warning; the run itself succeeded."""
    from pathlib import Path

    from edgeprep.history import try_record

    where = None
    for report, path in reports:
        where = try_record(report, path, history_path, reporter.warn) or where
    if where:
        click.echo(f"history: {Path(where).resolve()} (this run recorded; --no-history to skip)")


def keras_model_out(out, default_name: str, command: str):
    """Where ``fold``/``calibrate`` write their model, checked before any work: a directory (or a path ending in
    ``/``) gets ``default_name`` inside it, a missing ``.keras`` suffix is added (Keras saves only .keras). An
    existing model there is replaced only when edgeprep wrote it: its ``<name>.report.json`` beside it says so."""
    from pathlib import Path

    from edgeprep.outputs import REPORT_KINDS, check_replaceable, check_writable_dir

    path = Path(out) if out is not None else Path(default_name)
    if out is not None and (str(out).endswith("/") or path.is_dir()):
        path = path / default_name
    elif path.suffix != ".keras":
        path = path.with_name(path.name + ".keras")
    report = path.with_suffix(".report.json")

    def ours(p: Path) -> bool:
        import json

        try:
            return json.loads(report.read_text()).get("command") in ("fold", "calibrate")
        except (OSError, ValueError, AttributeError):
            return False

    check_replaceable(path, ours, f"a model written by edgeprep {command}")
    check_replaceable(report, REPORT_KINDS["json"], "an edgeprep report")
    check_writable_dir(path.absolute().parent)
    return path


def write_json_report(command: str, handle, out, sections: dict, data: dict | None = None):
    """A schema-validated report without artifacts (``calibrate``, ``fold``) at ``<out without suffix>.report.json``,
    written atomically; returns its path."""
    import json
    from pathlib import Path

    from edgeprep.outputs import REPORT_KINDS, atomic_path
    from edgeprep.report import build_report, validate

    report = build_report(command=command, model=handle.describe(), artifacts=[], data=data, extra=sections)
    validate(report)
    path = Path(out).with_suffix(".report.json")
    with atomic_path(path, REPORT_KINDS["json"]) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return path


__all__ = ["EXIT_OK", "EXIT_FAILED_CHECK", "EXIT_ERROR", "EXIT_BUG", "collect_preprocess", "complete_target",
           "data_options", "with_calibrate", "preprocess_options", "print_table", "make_reporter", "record_history",
           "keras_model_out", "write_json_report"]
