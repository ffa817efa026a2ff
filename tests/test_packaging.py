"""``pip install`` gives a working tool: the wheel carries the target profiles, the report schema and the licence.

The wheel is built as ``pip install .`` builds it (an isolated build environment with the declared build
requirements) from a copy of the sources, so no build/ or egg-info lands in the checkout. It is installed into a
fresh venv outside the checkout; the heavy dependencies (TensorFlow, ...) come from this venv through a ``.pth``
line, which adds the directory to ``sys.path`` without running its editable-install hook, so the edgeprep that runs
is the installed wheel's (asserted).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
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
