"""examples/ci/github-actions.yml, run: its steps in order, their ``if:`` conditions evaluated as GitHub does.

``act`` is not available and nothing may be downloaded, so this file runs the workflow itself: each ``run:`` step
in bash (``bash --noprofile --norc -eo pipefail``, GitHub's default shell) with the workflow's environment, the
step's ``env:``, ``${{ }}`` expressions substituted, ``$GITHUB_OUTPUT``, ``$GITHUB_STEP_SUMMARY`` and
``GITHUB_ACTIONS=true``; ``continue-on-error`` and the job status as GitHub keeps them. The ``uses:`` steps are the
runner's business and are played by small stand-ins: checkout and setup-python are the prepared directory and this
virtualenv, the cache keeps ``.edgeprep`` between the two jobs, the comment records the file it would post. The
install line's ``pip`` and ``sudo`` are stand-ins too (edgeprep is installed here; nothing is downloaded).
``edgeprep`` itself, TensorFlow and LiteRT are real.

Scenario: a pull request before main has a baseline gets a comment saying so (the run's own summary) and the run's
own verdict; a push to main whose run passes writes the first baseline; then a pull request that tightens the
target's ``max_size_bytes`` below the committed example model's size, so ``edgeprep run`` exits 1. The gate must
still run and write gate.md, the comment must be posted, and the job must end red.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

yaml = pytest.importorskip("yaml")

WORKFLOW = ROOT / "examples" / "ci" / "github-actions.yml"
STATUS_FUNCTIONS = ("success()", "failure()", "always()", "cancelled()")


# ---- the ``if:`` / ``${{ }}`` expressions the workflow uses -----------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>\d+(?:\.\d+)?)|(?P<op>&&|\|\||==|!=|!|\(|\)|,)"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_][A-Za-z0-9_\-]*)*))")


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"expression syntax this evaluator does not know: {text[pos:]!r} in {text!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class Expr:
    """A recursive-descent evaluator of GitHub's expression subset: string/number literals, context paths
    (``github.event_name``, ``env.X``, ``steps.ID.outputs.X``, ``steps.ID.outcome``), ``!``, ``&&``, ``||``,
    ``==``, ``!=``, parentheses, ``success() failure() always() cancelled() hashFiles(path)``. Anything else is an
    error, so a workflow edit that needs more makes this test fail instead of passing by accident."""

    def __init__(self, contexts: dict, functions: dict):
        self.contexts, self.functions = contexts, functions

    def eval(self, text: str):
        self.toks, self.i = _tokens(text), 0
        value = self._or()
        if self.i != len(self.toks):
            raise ValueError(f"unexpected {self.toks[self.i][1]!r} in {text!r}")
        return value

    def _peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def _take(self, value=None):
        tok = self._peek()
        if value is not None and tok[1] != value:
            raise ValueError(f"expected {value!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def _or(self):
        left = self._and()
        while self._peek()[1] == "||":
            self._take()
            right = self._and()
            left = left if _truthy(left) else right
        return left

    def _and(self):
        left = self._cmp()
        while self._peek()[1] == "&&":
            self._take()
            right = self._cmp()
            left = right if _truthy(left) else left
        return left

    def _cmp(self):
        left = self._unary()
        while self._peek()[1] in ("==", "!="):
            op = self._take()[1]
            right = self._unary()
            left = (_loose(left) == _loose(right)) == (op == "==")
        return left

    def _unary(self):
        if self._peek()[1] == "!":
            self._take()
            return not _truthy(self._unary())
        return self._atom()

    def _atom(self):
        kind, value = self._take()
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if kind == "num":
            return float(value)
        if value == "(":
            inner = self._or()
            self._take(")")
            return inner
        if kind == "name" and value in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[value]
        if kind == "name" and self._peek()[1] == "(":
            self._take("(")
            args = []
            while self._peek()[1] != ")":
                args.append(self._or())
                if self._peek()[1] == ",":
                    self._take()
            self._take(")")
            if value not in self.functions:
                raise ValueError(f"function this evaluator does not know: {value}()")
            return self.functions[value](*args)
        if kind == "name":
            node = self.contexts
            for part in value.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            return node
        raise ValueError(f"unexpected {value!r}")


def _truthy(v) -> bool:
    return v not in (None, False, "", 0, 0.0)


def _loose(v):
    """GitHub compares strings case-insensitively and null as ''; numbers as numbers."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return format(v, "g")
    return str(v).lower()


def test_the_expression_evaluator_knows_what_it_knows():
    e = Expr({"github": {"event_name": "push"}, "steps": {"run": {"outputs": {"code": "1"}}}},
             {"always": lambda: True, "hashFiles": lambda p: ""})
    assert e.eval("always() && github.event_name == 'push'") is True
    assert e.eval("github.event_name == 'pull_request' || steps.run.outputs.code") == "1"
    assert e.eval("!(steps.gate.outputs.code == '') ") is False          # a step that did not run: null == ''
    assert e.eval("hashFiles('gate.md') != ''") is False
    with pytest.raises(ValueError):
        e.eval("contains(github.event_name, 'pu')")
    with pytest.raises(ValueError):
        e.eval("github.event_name === 'push'")


# ---- the job -----------------------------------------------------------------------------------------------------

def _substitute(text: str, expr: Expr) -> str:
    def one(m):
        v = expr.eval(m.group(1))
        return "" if v is None else _loose(v) if isinstance(v, (bool, float)) else str(v)
    return re.sub(r"\$\{\{(.*?)\}\}", one, text)


def _hash_files(workspace: Path):
    def hash_files(*patterns):
        import hashlib

        files = sorted(p for pat in patterns for p in workspace.glob(pat) if p.is_file())
        return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest() if files else ""
    return hash_files


def _stand_in_bin(tmp: Path) -> Path:
    """``pip`` and ``sudo`` for the install line (edgeprep is installed in this virtualenv already)."""
    bin_dir = tmp / "stand-in-bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("pip", "sudo"):
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\necho \"(stand-in) {name} $*\"\n")
        tool.chmod(0o755)
    return bin_dir


def run_job(workflow: dict, workspace: Path, event: str, cache: dict, env_overrides: dict) -> dict:
    """Run the ``model`` job of ``workflow`` in ``workspace`` for ``event``; returns the steps' records and the
    job's status."""
    job = workflow["jobs"]["model"]
    wf_env = {**workflow.get("env", {}), **env_overrides}
    github = {"event_name": event, "sha": f"{event}-sha", "workspace": str(workspace)}
    steps: dict = {}
    records: list[dict] = []
    state = {"failed": False}
    functions = {"success": lambda: not state["failed"], "failure": lambda: state["failed"],
                 "always": lambda: True, "cancelled": lambda: False, "hashFiles": _hash_files(workspace)}
    bin_dir = _stand_in_bin(workspace.parent)
    for index, step in enumerate(job["steps"]):
        expr = Expr({"github": github, "env": wf_env, "steps": steps}, functions)
        name = step.get("name") or step.get("uses") or step["run"].splitlines()[0]
        condition = str(step.get("if", "success()")).strip()
        if condition.startswith("${{") and condition.endswith("}}"):
            condition = condition[3:-2]
        if not any(f in condition for f in STATUS_FUNCTIONS):
            condition = f"success() && ({condition})"
        record = {"name": name, "id": step.get("id"), "ran": _truthy(expr.eval(condition)), "stdout": "",
                  "summary": "", "outputs": {}}
        records.append(record)
        if not record["ran"]:
            record["outcome"] = "skipped"
            if step.get("id"):
                steps[step["id"]] = {"outcome": "skipped", "conclusion": "skipped", "outputs": {}}
            continue
        if "uses" in step:
            record["outcome"] = _uses(step, expr, workspace, cache, record)
        else:
            record["outcome"] = _run(step, expr, workspace, wf_env, github, bin_dir, index, record)
        conclusion = "success" if step.get("continue-on-error") else record["outcome"]
        if conclusion == "failure":
            state["failed"] = True
        if step.get("id"):
            steps[step["id"]] = {"outcome": record["outcome"], "conclusion": conclusion, "outputs": record["outputs"]}
    return {"steps": records, "status": "failure" if state["failed"] else "success",
            "by_name": {r["name"]: r for r in records}}


def _run(step, expr, workspace, wf_env, github, bin_dir, index, record) -> str:
    script = workspace.parent / f"step-{github['event_name']}-{index}.sh"
    script.write_text(_substitute(step["run"], expr))
    output, summary = workspace.parent / f"output-{index}", workspace.parent / f"summary-{index}.md"
    output.write_text("")
    summary.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ.get('PATH', '')}",
           **{k: str(v) for k, v in wf_env.items()},
           **{k: _substitute(str(v), expr) for k, v in (step.get("env") or {}).items()},
           "GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_EVENT_NAME": github["event_name"],
           "GITHUB_SHA": github["sha"], "GITHUB_WORKSPACE": str(workspace), "GITHUB_OUTPUT": str(output),
           "GITHUB_STEP_SUMMARY": str(summary), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("EDGEPREP_DEBUG", None)
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=workspace,
                          env=env, capture_output=True, text=True, timeout=300)
    record["stdout"], record["stderr"], record["code"] = done.stdout, done.stderr, done.returncode
    record["summary"] = summary.read_text()
    record["outputs"] = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return "success" if done.returncode == 0 else "failure"


def _uses(step, expr, workspace: Path, cache: dict, record) -> str:
    action = step["uses"].split("@")[0]
    with_ = {k: _substitute(str(v), expr) for k, v in (step.get("with") or {}).items()}
    if action in ("actions/checkout", "actions/setup-python", "actions/upload-artifact"):
        return "success"            # the prepared directory, this virtualenv; uploads are not kept here
    if action == "actions/cache/restore":
        keys = [with_["key"]] + [k for k in with_.get("restore-keys", "").splitlines() if k]
        hit = next((cache[k] for k in keys if k in cache), None) or next(
            (cache[k] for prefix in keys[1:] for k in reversed(list(cache)) if k.startswith(prefix)), None)
        if hit is not None:
            shutil.copytree(hit, workspace / with_["path"], dirs_exist_ok=True)
        record["restored"] = hit is not None
        return "success"
    if action == "actions/cache/save":
        saved = workspace.parent / f"cache-{len(cache)}"
        shutil.copytree(workspace / with_["path"], saved)
        cache[with_["key"]] = saved
        return "success"
    if action == "marocchino/sticky-pull-request-comment":
        record["comment"] = (workspace / with_["path"]).read_text()
        return "success"
    raise AssertionError(f"the workflow uses an action this test has no stand-in for: {step['uses']}")


def _checkout(where: Path, workflow: dict, max_size_bytes: int) -> Path:
    """A checkout-like directory: the committed files the workflow names, and the target profile ./targets/tiny.toml
    (fp32 TFLite only, 100 evaluation samples, no [bench]: the cheapest real run) with this size limit."""
    where.mkdir(parents=True)
    model = workflow["env"]["MODEL"]
    (where / model).parent.mkdir(parents=True)
    shutil.copy(ROOT / model, where / model)
    (where / "calibration_data").mkdir()
    for f in (ROOT / "calibration_data").glob("fashion_mnist*"):
        shutil.copy(f, where / "calibration_data" / f.name)
    (where / "targets").mkdir()
    (where / "targets" / "tiny.toml").write_text(
        'name = "tiny"\ndescription = "fp32 TFLite, size-gated (tests/test_ci_workflow.py)"\n'
        'formats = ["tflite"]\nprecisions = ["fp32"]\nruntime = "litert"\nthreads = 1\n\n'
        "[verify]\nsamples = 100\n\n"
        f"[gates]\nmax_size_bytes = {max_size_bytes}\nmin_agreement = 0.99\nmax_size_growth_pct = 5.0\n")
    return where


def _installs_the_extras_of(target_name: str, install: dict) -> None:
    """The stand-in pip's line names an extra (``.[tflite]``, ``.[all]``) for every toolchain the target needs."""
    from edgeprep.backends import get_backend
    from edgeprep.targets import load_target
    from edgeprep.toolchain import REQUIREMENTS

    needed = {REQUIREMENTS[p][2] for f in load_target(target_name).formats for p in get_backend(f).packages}
    line = next(x for x in install["stdout"].splitlines() if x.startswith("(stand-in) pip install"))
    extras = {e for group in re.findall(r"\.\[([a-z,]+)\]", line) for e in group.split(",")}
    assert needed <= extras or "all" in extras, (line, needed)


@pytest.mark.slow
def test_a_failed_gate_still_gets_its_gate_its_comment_and_a_red_job(tmp_path):
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["env"]["MODEL"] == "examples/fashion_mnist_cnn.keras"
    cache: dict = {}
    overrides = {"TARGET": "tiny", "EDGEPREP_HISTORY": ".edgeprep/history.sqlite"}

    # a pull request before main has any baseline: judged by the run's own thresholds, and its comment says so
    first = run_job(workflow, _checkout(tmp_path / "first" / "ws", workflow, 10_000_000), "pull_request", cache,
                    overrides)
    steps = first["by_name"]
    assert not steps["Restore the baseline and the run history"]["restored"]
    assert steps["edgeprep run"]["outcome"] == "success", steps["edgeprep run"]["stderr"][-2000:]
    assert steps["edgeprep gate"]["outputs"] == {"code": "none"}, steps["edgeprep gate"]["stderr"][-2000:]
    comment = steps["Post the report on the pull request"]
    assert comment["ran"] and comment["comment"].startswith("**No baseline for tiny yet**")
    assert "# edgeprep report" in comment["comment"]                   # the run's own summary follows
    assert "edgeprep run exited 0, edgeprep gate none" in steps["Verdict"]["stdout"]
    assert first["status"] == "success" and not cache          # nothing saved from a pull request

    # a push to main whose run passes: the first baseline is written and cached
    push = run_job(workflow, _checkout(tmp_path / "push" / "ws", workflow, 10_000_000), "push", cache, overrides)
    steps = push["by_name"]
    assert steps["edgeprep run"]["outcome"] == "success", steps["edgeprep run"]["stderr"][-2000:]
    assert steps["edgeprep gate"]["ran"] and steps["edgeprep gate"]["outcome"] == "success", \
        steps["edgeprep gate"]["stderr"][-2000:]
    assert "no baseline yet: wrote .edgeprep/baseline-tiny.json" in steps["edgeprep gate"]["stdout"]
    assert not steps["Post the report on the pull request"]["ran"]
    assert steps["Save the baseline and the run history"]["ran"]
    assert "# edgeprep report" in steps["edgeprep run"]["summary"]            # $GITHUB_STEP_SUMMARY
    # the install line installs the toolchains of the workflow's own target (plain `pip install .` has none)
    _installs_the_extras_of(workflow["env"]["TARGET"], next(r for r in push["steps"] if r["name"].startswith("pip ")))
    assert "::error" not in steps["edgeprep run"]["stdout"]
    assert push["status"] == "success"
    (saved,) = cache.values()
    assert (saved / "baseline-tiny.json").is_file() and (saved / "history.sqlite").is_file()

    # a pull request that tightens the size gate below the model's size: edgeprep run exits 1
    pr = run_job(workflow, _checkout(tmp_path / "pr" / "ws", workflow, 1000), "pull_request", cache, overrides)
    steps, ws = pr["by_name"], tmp_path / "pr" / "ws"
    assert steps["Restore the baseline and the run history"]["restored"]
    run, gate = steps["edgeprep run"], steps["edgeprep gate"]
    assert run["outcome"] == "failure" and run["code"] == 1 and run["outputs"] == {"code": "1"}, run["stderr"][-2000:]
    assert "failed (max_size_bytes)" in run["stdout"]                          # a pipe: nothing cut
    assert re.search(r"^::error file=examples/fashion_mnist_cnn\.keras,title=edgeprep run tiny%3A tflite fp32 "
                     r"max_size_bytes::fashion_mnist_cnn\.fp32\.tflite: max_size_bytes: \d+ vs threshold 1000$",
                     run["stdout"], re.M), run["stdout"]
    assert "# edgeprep report" in run["summary"] and "failed" in run["summary"]
    assert gate["ran"] and gate["code"] == 1 and gate["outputs"] == {"code": "1"}, gate["stderr"][-2000:]
    assert (ws / "gate.md").is_file() and (ws / "gate.xml").is_file() and (ws / "gate.html").is_file()
    assert "Gate vs .edgeprep/baseline-tiny.json: **FAILED**" in (ws / "gate.md").read_text()
    assert "::error file=examples/fashion_mnist_cnn.keras,title=edgeprep gate tiny%3A fashion_mnist_cnn.fp32.tflite " \
           "max_size_bytes (regression)::" in gate["stdout"]
    assert "Gate vs" in gate["summary"]
    comment = steps["Post the report on the pull request"]
    assert comment["ran"] and "max_size_bytes" in comment["comment"]
    assert steps["Keep the reports"]["ran"] and not steps["Save the baseline and the run history"]["ran"]
    verdict = steps["Verdict"]
    assert verdict["ran"] and verdict["outcome"] == "failure"
    assert "edgeprep run exited 1, edgeprep gate 1" in verdict["stdout"]
    assert pr["status"] == "failure"
