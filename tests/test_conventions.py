"""Command-line conventions, through the real CLI on the committed example model (TensorFlow, LiteRT real):
user text is never Rich markup, ``-`` is stdout, ``-q``/``--debug`` anywhere and warnings survive ``-q``, the run
history is announced (``--no-history``), tables are never cut in pipes, JUnit times are real, GitHub Actions gets
its job summary and annotations, and ``--target`` completes in the shell.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import EXAMPLE_MODEL, MANIFEST, run_cli

PROFILE = ('name = "{name}"\ndescription = "fp32 TFLite (tests/test_conventions.py)"\nformats = ["tflite"]\n'
           'precisions = ["fp32"]\nruntime = "litert"\nthreads = 1\n\n[verify]\nsamples = 60\n\n[gates]\n{gates}\n')
DETAIL = "no raw latencies in this report: benchmark it (edgeprep bench or [bench] in the target)"


def profile(where: Path, name: str, gates: str) -> Path:
    path = where / f"{name}.toml"
    path.write_text(PROFILE.format(name=name, gates=gates))
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One real run of a model file named ``tiny[red].keras`` (the example model): its run directory, history and
    the profiles the tests gate it with."""
    from io import StringIO

    from rich.console import Console

    from edgeprep import progress
    from edgeprep.cli import main

    where = tmp_path_factory.mktemp("conventions")
    model = where / "tiny[red].keras"
    shutil.copy(EXAMPLE_MODEL, model)
    passing = profile(where, "passing", "max_size_bytes = 10_000_000\nmin_agreement = 0.99")
    latency = profile(where, "latency", "max_latency_regression_pct = 20.0")
    failing = profile(where, "failing", "max_size_bytes = 1000")
    history = where / "history.sqlite"
    shown, saved = StringIO(), progress.console
    progress.console = Console(file=shown, width=300)     # as loud_cli does: what the terminal would show
    try:
        from contextlib import redirect_stdout

        out = StringIO()
        with redirect_stdout(out):
            code = main(["run", str(model), "--target", str(passing), "--data", str(MANIFEST), "--out",
                         str(where / "run"), "--history", str(history)])
    finally:
        progress.console = saved
    assert code == 0, out.getvalue() + shown.getvalue()
    return {"dir": where, "model": model, "run": where / "run", "passing": passing, "latency": latency,
            "failing": failing, "history": history, "stdout": out.getvalue(), "console": shown.getvalue()}


# ---- user text is shown as it is ---------------------------------------------------------------------------------

def test_a_model_named_like_markup_is_shown_as_named(made, cli):
    assert f"{made['model']} — float top-1" in made["stdout"]           # the table title
    assert "tiny[red].keras" in made["console"]                         # the progress lines ("Loading ...")
    listing = cli("history", "--history", made["history"])
    assert listing.returncode == 0 and "tiny[red].fp32.tflite" in listing.stdout   # a table cell
    assert str(made["history"]) in listing.stdout                       # the title


def test_a_message_holding_brackets_keeps_them(made, cli):
    """The gate's "[bench] in the target" in a table cell, the error line and the console's progress lines."""
    out = cli("gate", made["run"], "--baseline", made["run"], "--target", made["latency"], "--no-rebench")
    assert out.returncode == 2, out.stdout + out.stderr
    assert DETAIL in out.stdout and "tiny[red].fp32.tflite" in out.stdout
    assert DETAIL in out.stderr and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_reporter_lines_read_no_markup(capsys):
    from io import StringIO

    from edgeprep import progress

    saved, shown = progress.console, StringIO()
    progress.console = progress.make_console(shown)
    try:
        rep = progress.Reporter()
        rep.info("[bench] runs = 3 for tiny[red].keras")
        rep.warn("[gates.int8] min_agreement [/] unset")
        with rep.step("Loading tiny[red].keras"):
            pass
    finally:
        progress.console = saved
    text = shown.getvalue()
    assert "[bench] runs = 3 for tiny[red].keras" in text
    assert "warning: [gates.int8] min_agreement [/] unset" in text
    assert "- Loading tiny[red].keras ..." in text


# ---- tables in pipes are never cut --------------------------------------------------------------------------------

def test_tables_in_a_pipe_keep_every_word(made):
    """Subprocesses whose stdout is a pipe (a CI log): the gate's long detail and the history's dates whole."""
    gate = run_cli("gate", str(made["run"]), "--baseline", str(made["run"]), "--target", str(made["latency"]),
                   "--no-rebench")
    assert gate.returncode == 2, gate.stderr
    assert any(DETAIL in line and "max_latency_regression_pct" in line for line in gate.stdout.splitlines()), \
        gate.stdout
    listing = run_cli("history", "--history", str(made["history"]))
    assert listing.returncode == 0, listing.stderr
    created = json.loads((made["run"] / "report.json").read_text())["created"]
    row = next(line for line in listing.stdout.splitlines() if "tiny[red].fp32.tflite" in line)
    assert created in row and "passing" in row
    for out in (gate.stdout, listing.stdout):
        assert "…" not in out


# ---- `-` is stdout ---------------------------------------------------------------------------------------------------

def test_dash_writes_to_stdout_and_the_table_moves_to_stderr(made, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = cli("gate", made["run"], "--baseline", made["run"], "--target", made["passing"], "--json", "-")
    assert out.returncode == 0, out.stderr
    verdicts = json.loads(out.stdout)                      # stdout is the JSON and nothing else
    assert verdicts["status"] == "passed" and "gate vs" in out.stderr
    md = cli("gate", made["run"], "--baseline", made["run"], "--target", made["passing"], "--markdown", "-")
    assert md.returncode == 0 and md.stdout.startswith("# edgeprep report: ") and "## Gate vs" in md.stdout
    junit = cli("gate", made["run"], "--baseline", made["run"], "--target", made["passing"], "--junit", "-")
    assert ET.fromstring(junit.stdout).tag == "testsuites"
    assert not (tmp_path / "-").exists()
    both = cli("gate", made["run"], "--baseline", made["run"], "--json", "-", "--markdown", "-")
    assert both.returncode == 2 and both.stderr.count("\n") == 1, both.stderr
    assert "--markdown and --json all name stdout" in both.stderr and "Traceback" not in both.stderr


# ---- -q and --debug anywhere; warnings survive -q --------------------------------------------------------------

def test_quiet_after_the_command_hides_progress_but_not_warnings(made, loud_cli, tmp_path):
    out = loud_cli("convert", made["model"], "--to", "tflite", "--precision", "int8", "--data", MANIFEST,
                   "--calib-samples", "50", "--out", tmp_path / "m.tflite", "-q")
    assert out.returncode == 0, out.stderr
    assert "warning: only 50 calibration samples used" in out.stderr
    assert "Loading" not in out.stderr and "Converting" not in out.stderr and "done in" not in out.stderr
    assert (tmp_path / "m.tflite").is_file()


def test_debug_after_the_command_shows_the_traceback(cli, tmp_path):
    from edgeprep import _util

    try:
        plain = cli("run", tmp_path / "nope.keras", "--target", "litert-cpu")
        debug = cli("run", tmp_path / "nope.keras", "--target", "litert-cpu", "--debug")
    finally:
        _util.set_verbose(False)
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr
    assert cli("targets", "show", "litert-cpu", "-q").returncode == 0
    unknown = cli("run", tmp_path / "nope.keras", "--quietly")
    assert unknown.returncode == 2 and "No such option '--quietly'" in unknown.stderr


# ---- the run history: announced, and --no-history ---------------------------------------------------------------

def test_run_says_where_it_records_and_no_history_records_nothing(made, cli, tmp_path, monkeypatch):
    assert f"history: {made['history'].resolve()} (this run recorded" in made["stdout"]
    elsewhere = tmp_path / "default-history.sqlite"
    monkeypatch.setenv("EDGEPREP_HISTORY", str(elsewhere))
    out = cli("run", made["model"], "--target", made["passing"], "--data", MANIFEST, "--out", tmp_path / "run",
              "--no-history")
    assert out.returncode == 0, out.stderr
    assert "history:" not in out.stdout and not elsewhere.exists()


# ---- JUnit times ---------------------------------------------------------------------------------------------------

def test_junit_times_are_the_seconds_the_report_recorded(made, cli, tmp_path):
    report = json.loads((made["run"] / "report.json").read_text())
    (a,) = report["artifacts"]
    cases = {c.get("name"): float(c.get("time")) for c in ET.parse(made["run"] / "junit.xml").iter("testcase")}
    assert set(cases) == {"max_size_bytes", "no_foldable_bn_ops", "min_agreement"}
    assert a["convert_seconds"] > 0 and a["verification"]["seconds"] > 0
    assert cases["max_size_bytes"] == cases["no_foldable_bn_ops"] == pytest.approx(a["convert_seconds"] / 2, abs=1e-3)
    assert cases["min_agreement"] == pytest.approx(a["verification"]["seconds"], abs=1e-3)
    suite = ET.parse(made["run"] / "junit.xml").getroot().find("testsuite")
    assert float(suite.get("time")) == pytest.approx(a["convert_seconds"] + a["verification"]["seconds"], abs=2e-3)

    bench = cli("bench", made["run"] / "tiny[red].fp32.tflite", "--runs", "20", "--repeats", "1", "--warmup", "0",
                "--out", tmp_path / "bench", "--no-history")
    assert bench.returncode == 0, bench.stderr
    measured = json.loads((tmp_path / "bench" / "report.json").read_text())["artifacts"][0]["bench"]
    (case,) = [c for c in ET.parse(tmp_path / "bench" / "junit.xml").iter("testcase") if c.get("name") == "bench"]
    assert measured["measured_seconds"] > 0
    assert float(case.get("time")) == pytest.approx(measured["measured_seconds"], abs=1e-3)


# ---- GitHub Actions ----------------------------------------------------------------------------------------------

def test_under_github_actions_the_job_summary_and_annotations(made, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(made["dir"])
    outside = cli("gate", made["run"], "--baseline", made["run"], "--target", made["failing"])
    assert outside.returncode == 1 and "::error" not in outside.stdout + outside.stderr

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_WORKSPACE", str(made["dir"]))
    gate = cli("gate", made["run"], "--baseline", made["run"], "--target", made["failing"])
    assert gate.returncode == 1
    assert "::error file=tiny[red].keras,title=edgeprep gate passing%3A tiny[red].fp32.tflite max_size_bytes " \
           "(regression)::" in gate.stdout, gate.stdout
    assert "Gate vs" in summary.read_text() and "max_size_bytes" in summary.read_text()

    verify = cli("verify", made["model"], made["run"] / "tiny[red].fp32.tflite", "--data", MANIFEST, "--target",
                 made["failing"], "--samples", "20")
    assert verify.returncode == 1, verify.stderr
    lines = [line for line in verify.stdout.splitlines() if line.startswith("::error")]
    assert lines == ["::error file=tiny[red].keras,title=edgeprep verify failing%3A tflite fp32 max_size_bytes::"
                     "tiny[red].fp32.tflite: max_size_bytes: 5185324 vs threshold 1000"
                     .replace("5185324", str(json.loads((made["run"] / "report.json").read_text())
                                             ["artifacts"][0]["size_bytes"]))]
    text = summary.read_text()
    assert text.index("Gate vs") < text.index("# edgeprep report: ")      # appended, not replaced

    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "no-such-dir" / "summary.md"))
    unwritable = cli("gate", made["run"], "--baseline", made["run"], "--target", made["failing"])
    assert unwritable.returncode == 1          # the verdict stands; the summary is a warning


def test_annotation_text_is_escaped_as_github_asks():
    from edgeprep.commands._ci import annotation

    assert annotation("a,b:c.keras", "t: x, y", "50% done\nnext") == \
        "::error file=a%2Cb%3Ac.keras,title=t%3A x%2C y::50%25 done%0Anext"


# ---- shell completion --------------------------------------------------------------------------------------------

def _complete(words: str, tmp_path: Path) -> list[str]:
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {"_EDGEPREP_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword),
           "EDGEPREP_TARGETS": str(tmp_path)}
    done = run_cli(cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done.stdout.splitlines()


def test_target_options_complete_the_profile_names(tmp_path):
    profile(tmp_path, "my-board", "max_size_bytes = 1")
    (tmp_path / "targets").mkdir()
    profile(tmp_path / "targets", "lab-rig", "max_size_bytes = 1")          # ./targets in the current directory
    names = _complete("edgeprep run m.keras --target ", tmp_path)
    assert {"plain,my-board", "plain,lab-rig", "plain,litert-cpu", "plain,openvino-cpu"} <= set(names)
    assert _complete("edgeprep bench a.tflite --target op", tmp_path) == ["plain,openvino-cpu"]
    assert _complete("edgeprep run m.keras --targets litert-cpu,my", tmp_path) == ["plain,litert-cpu,my-board"]
    assert "plain,my-board" in _complete("edgeprep gate run -t ", tmp_path)
    assert "plain,litert-cpu" in _complete("edgeprep targets show ", tmp_path)
    assert _complete("edgeprep run m.keras --target ./", tmp_path) == ["file,./"]


def test_completion_is_documented_in_the_help(cli):
    out = cli("--help")
    assert "_EDGEPREP_COMPLETE=bash_source edgeprep" in out.stdout
