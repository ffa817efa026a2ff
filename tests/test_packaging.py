"""``pip install`` gives a working tool: the wheel carries the target profiles, the report schema, the licence and
py.typed; the base install (no format's toolchain) starts, and a missing toolchain is one line naming its extra.

The wheel is built as ``pip install .`` builds it (an isolated build environment with the declared build
requirements) from a copy of the sources, so no build/ or egg-info lands in the checkout. It is installed into a
fresh venv outside the checkout; the heavy dependencies (TensorFlow, ...) come from this venv through a ``.pth``
line, which adds the directory to ``sys.path`` without running its editable-install hook, so the edgeprep that runs
is the installed wheel's (asserted).

The base install is tested in one more venv (``bare_venv``) whose ``.pth`` points at a directory of links to some
of this venv's distributions only, chosen per test: the closure of the wheel's own base requirements (what
``pip install edgeprep`` installs), plus TensorFlow's closure for a user who has a TensorFlow of their own.
Nothing is downloaded; a toolchain outside the chosen distributions is absent to Python as it is on a machine that
never installed it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

PROFILES = sorted(p.name for p in (ROOT / "edgeprep" / "profiles").glob("*.toml"))


def _run(cmd: list[str], cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEPREP_TARGETS", "VIRTUAL_ENV")}
    return subprocess.run(cmd, cwd=cwd, env={**base, "TF_CPP_MIN_LOG_LEVEL": "2", **env}, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("edgeprep", "device_bench"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # An absolute path: a bare word would be taken for a package name on the index.
    done = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(work / "dist"),
                 str(src.resolve())], cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    (whl,) = (work / "dist").glob("edgeprep-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv outside the checkout with the wheel installed, seeing this venv's dependencies."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    assert not env_dir.resolve().is_relative_to(ROOT)
    done = _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=env_dir.parent)
    assert done.returncode == 0, done.stderr
    py = env_dir / "bin" / "python"
    # Installed before the .pth exists, so pip sees a bare environment (and never the editable install here).
    done = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps", "--no-index",
                 str(wheel)], cwd=env_dir.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=env_dir.parent).stdout.strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir


def test_wheel_holds_profiles_schema_and_licence(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"edgeprep/profiles/{p}" for p in PROFILES} <= names
    assert "edgeprep/report/report.schema.json" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)
    sources = {str(p.relative_to(ROOT)) for pkg in ("edgeprep", "device_bench") for p in (ROOT / pkg).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert sources <= names, f"modules missing from the wheel: {sorted(sources - names)}"
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: Apache-2.0" in text and "License-File: LICENSE" in text
    assert "edgeprep/py.typed" in names           # the API's annotations reach type checkers
    assert {f"Provides-Extra: {e}" for e in ("tflite", "openvino", "coreml", "onnx", "all", "test")} <= set(
        text.splitlines()), text
    assert not [r for r in _base_requirements(wheel) if r.split(";")[0].strip().startswith(
        ("tensorflow", "coremltools", "openvino", "nncf", "onnx", "ai-edge-litert"))], "a toolchain in the base install"
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0, January 2004" in (
        ROOT / "LICENSE").read_text()


def test_installed_tool_works_from_outside_the_checkout(venv, tmp_path):
    import keras

    assert not tmp_path.resolve().is_relative_to(ROOT)
    py, tool = venv / "bin" / "python", str(venv / "bin" / "edgeprep")
    where = _run([str(py), "-c", "import edgeprep; print(edgeprep.__file__)"], cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve()), where.stdout

    listing = _run([tool, "targets"], cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    rows = [ln.split()[:2] for ln in listing.stdout.splitlines()]
    assert rows == [[p.removesuffix(".toml"), "shipped"] for p in PROFILES], listing.stdout

    shown = _run([tool, "targets", "show", "litert-cpu"], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == (ROOT / "edgeprep" / "profiles" / "litert-cpu.toml").read_text()
    assert tomllib.loads(shown.stdout)["name"] == "litert-cpu"

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, outputs).save(tmp_path / "tiny.keras")
    # One conversion (a TensorFlow start costs ~20 s here): the shipped profile, found by name, sets the options.
    done = _run([tool, "-q", "convert", "tiny.keras", "--to", "tflite", "--precision", "fp32", "--target",
                 "litert-cpu", "--out", "tiny.fp32.tflite"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "tiny.fp32.tflite").read_bytes()[4:8] == b"TFL3"


def test_no_profiles_anywhere_is_an_error(venv, tmp_path):
    site = Path(_run([str(venv / "bin" / "python"), "-c", "import edgeprep; print(edgeprep.__file__)"],
                     cwd=tmp_path).stdout.strip()).parent
    shipped, aside = site / "profiles", site / "profiles.aside"
    shipped.rename(aside)
    try:
        done = _run([str(venv / "bin" / "edgeprep"), "targets"], cwd=tmp_path)
    finally:
        aside.rename(shipped)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgeprep: error: no target profiles found"), lines
    assert done.stdout == ""


# -- the base install: `pip install edgeprep` without extras -------------------------------------------------------

def _base_requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines that apply without an extra (what ``pip install edgeprep`` installs)."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    reqs = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    return [r for r in reqs if Requirement(r).marker is None or Requirement(r).marker.evaluate({"extra": ""})]


def _closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """The distributions of this venv that ``requirements`` install, with everything they require."""
    from packaging.requirements import Requirement

    found: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        key = req.name.lower().replace("_", "-")
        if key in found:
            continue
        found[key] = dist = metadata.distribution(req.name)   # absent here: the closure cannot be built (a bug)
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in (req.extras or set()) | {""}):
                todo.append(sub)
    return found


def _link_farm(dest: Path, dists: dict[str, metadata.Distribution]) -> Path:
    """A directory of symlinks to exactly the files of ``dists`` in this venv's site-packages: an entry all of whose
    owners are in ``dists`` is linked whole, a shared one (a namespace package) file by file."""
    site = Path(sysconfig.get_paths()["purelib"])
    owners: dict[tuple[str, ...], set[str]] = {}
    for dist in metadata.distributions(path=[str(site)]):
        key = (dist.metadata["Name"] or "").lower().replace("_", "-")
        for f in dist.files or []:
            parts = Path(f).parts
            if parts and parts[0] != "..":
                for i in range(1, len(parts) + 1):
                    owners.setdefault(parts[:i], set()).add(key)
    wanted = set(dists)

    def link(parts: tuple[str, ...]) -> None:
        if owners[parts] <= wanted or not (site.joinpath(*parts)).is_dir():
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            if (site.joinpath(*parts)).exists():
                target.symlink_to(site.joinpath(*parts))
            return
        for child in sorted(k for k in owners if len(k) == len(parts) + 1 and k[:len(parts)] == parts):
            if owners[child] & wanted:
                link(child)
    for top in sorted(k for k in owners if len(k) == 1 and owners[k] & wanted):
        link(top)
    return dest


@pytest.fixture(scope="module")
def bare_venv(wheel, tmp_path_factory):
    """A fresh venv with the wheel alone; ``expose(*requirements)`` makes exactly the base install's closure (plus
    ``requirements``' closures) importable in it. Returns (venv, expose)."""
    env_dir = tmp_path_factory.mktemp("bare") / "env"
    done = _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=env_dir.parent)
    assert done.returncode == 0, done.stderr
    py = env_dir / "bin" / "python"
    done = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps", "--no-index",
                 str(wheel)], cwd=env_dir.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=env_dir.parent).stdout.strip())
    base = [r.split(";")[0] for r in _base_requirements(wheel)]
    farms = tmp_path_factory.mktemp("farms")

    def expose(*requirements: str) -> Path:
        dists = _closure(base + list(requirements))
        assert "edgeprep" not in dists
        farm = _link_farm(farms / "-".join(["base", *requirements]).replace("=", "").replace("*", ""), dists)
        (site / "zz_dependencies.pth").write_text(f"{farm}\n")
        return farm
    return env_dir, expose


TOOLCHAIN_MODULES = ("tensorflow", "ai_edge_litert", "openvino", "nncf", "coremltools", "onnx", "onnxruntime")


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith(("WARNING:", "I0000", "E0000"))]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, (done.returncode, done.stderr)
    return lines[0]


def test_base_install_starts_without_any_toolchain(bare_venv, tmp_path):
    import keras

    env_dir, expose = bare_venv
    expose()
    py, tool = env_dir / "bin" / "python", str(env_dir / "bin" / "edgeprep")
    probe = ("import importlib.util as u, json, sys, time; t = time.perf_counter(); import edgeprep; edgeprep.run; "
             "import edgeprep.cli; print(json.dumps([time.perf_counter() - t, edgeprep.__file__, "
             f"[m for m in {TOOLCHAIN_MODULES!r} if u.find_spec(m)]]))")
    done = _run([str(py), "-c", probe], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    seconds, where, importable = json.loads(done.stdout)
    assert Path(where).resolve().is_relative_to(env_dir.resolve()) and importable == [], (where, importable)
    assert seconds < 5, seconds

    listing = _run([tool, "targets"], cwd=tmp_path)           # profiles, reports, gates: no toolchain needed
    assert listing.returncode == 0, listing.stderr
    assert [ln.split()[0] for ln in listing.stdout.splitlines()] == [p.removesuffix(".toml") for p in PROFILES]

    inputs = keras.Input((8, 8, 1))
    keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs))).save(tmp_path / "tiny.keras")
    line = _one_error_line(_run([tool, "-q", "convert", "tiny.keras", "--to", "coreml", "--precision", "fp16"],
                                cwd=tmp_path))
    assert line == ("edgeprep: error: loading a Keras model needs TensorFlow: pip install 'edgeprep[tflite]', "
                    "or a TensorFlow of your own: pip install tensorflow-cpu"), line
    (tmp_path / "m.onnx").write_bytes(b"")
    line = _one_error_line(_run([tool, "-q", "convert", "m.onnx", "--to", "tflite", "--precision", "fp32"],
                                cwd=tmp_path))
    assert line == "edgeprep: error: an .onnx model needs ONNX and ONNX Runtime: pip install 'edgeprep[onnx]'", line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "tiny.keras"]


def test_a_missing_format_toolchain_names_its_extra(bare_venv, tmp_path):
    """A user with a TensorFlow of their own and plain ``pip install edgeprep``: each format without its toolchain
    is one line naming the extra, exit code 2, nothing written."""
    import keras

    env_dir, expose = bare_venv
    farm = expose(f"tensorflow-cpu=={metadata.version('tensorflow-cpu')}")
    assert (farm / "tensorflow").exists() and not (farm / "coremltools").exists()
    tool = str(env_dir / "bin" / "edgeprep")
    inputs = keras.Input((8, 8, 1))
    keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs))).save(tmp_path / "tiny.keras")
    for fmt, words in (("coreml", "the coreml format needs coremltools: pip install 'edgeprep[coreml]'"),
                       ("openvino", "the openvino format needs OpenVINO and NNCF: pip install 'edgeprep[openvino]'"),
                       ("tflite", "the tflite format needs LiteRT: pip install 'edgeprep[tflite]'")):
        done = _run([tool, "-q", "convert", "tiny.keras", "--to", fmt, "--precision", "fp32"], cwd=tmp_path)
        assert _one_error_line(done) == f"edgeprep: error: {words}", fmt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.keras"]
