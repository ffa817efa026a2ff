"""Shared fixtures: real data from calibration_data/, tiny real Keras models built per session, and helpers.

Nothing here fakes a toolchain: models are built and run with TensorFlow/Keras, artifacts with LiteRT, OpenVINO
and ONNX Runtime.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import edgeprep  # noqa: F401  (before any test imports TensorFlow: it sets TF_ENABLE_ONEDNN_OPTS, see there)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Commands record runs in a history file (default .edgeprep/ under the working directory, i.e. this checkout):
# tests keep theirs in a temporary directory instead.
os.environ.setdefault("EDGEPREP_HISTORY", os.path.join(tempfile.mkdtemp(prefix="edgeprep-test-"), "history.sqlite"))

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "calibration_data"
MANIFEST = DATA_DIR / "fashion_mnist.toml"
EXAMPLE_MODEL = ROOT / "examples" / "fashion_mnist_cnn.keras"
REQUIRE_ALL = os.environ.get("EDGEPREP_REQUIRE_ALL") == "1"


def require(condition: bool, what: str) -> None:
    """Skip when an external tool is missing on a developer machine; fail in CI (EDGEPREP_REQUIRE_ALL=1)."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"required for this test and missing: {what}")
    pytest.skip(f"missing: {what}")


@pytest.fixture(scope="session")
def data():
    """The example manifest's data (Fashion-MNIST 28x28): calibration and evaluation splits."""
    from edgeprep.data import load_data

    return load_data(MANIFEST)


@pytest.fixture(scope="session")
def eval_npz() -> dict:
    with np.load(DATA_DIR / "fashion_mnist_eval.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def calib_npz() -> dict:
    with np.load(DATA_DIR / "fashion_mnist_calib.npz") as z:
        return {k: z[k] for k in z.files}


def build_small_cnn(seed: int = 0, sequential: bool = False):
    """A tiny Conv-BN-ReLU / depthwise / residual classifier for 28x28x1 inputs (untrained unless fitted)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    if sequential:
        return keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False), layers.BatchNormalization(),
            layers.ReLU(), layers.DepthwiseConv2D(3, padding="same"), layers.GlobalAveragePooling2D(),
            layers.Dense(10, activation="softmax")], name="small_seq")
    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inp)
    x = layers.BatchNormalization(momentum=0.9)(x)   # 0.9: moving statistics settle within a short fit
    x = layers.ReLU()(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization(momentum=0.9)(y)
    x = layers.Add()([x, layers.ReLU()(y)])
    x = layers.Conv2D(16, 1)(x)
    x = layers.MaxPooling2D(4)(x)
    x = layers.Flatten()(x)
    out = layers.Dense(10, activation="softmax")(x)
    return keras.Model(inp, out, name="small_cnn")


def made_once(tmp_path_factory, name: str, make) -> Path:
    """``make(path)`` once per test session, however many xdist workers: the first to ask makes the file (under
    a lock, written to a temporary name and renamed), the others wait for it and share it (read only)."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "made-once"
    shared.mkdir(exist_ok=True)
    path = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            partial = shared / f"partial-{os.getpid()}-{name}"
            make(partial)
            partial.rename(path)
    return path


@pytest.fixture(scope="session")
def trained_small(tmp_path_factory, calib_npz) -> Path:
    """A small CNN trained on the committed calibration images (about 74 % top-1 on the evaluation subset);
    trained once per session, shared by the xdist workers."""
    def train(path: Path) -> None:
        import keras

        model = build_small_cnn()
        model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
        x = calib_npz["x"].astype("float32") / 255.0
        model.fit(x, calib_npz["y"], epochs=12, batch_size=32, verbose=0)
        model.save(path)

    return made_once(tmp_path_factory, "small_cnn.keras", train)


@pytest.fixture
def cli(capsys):
    """The real CLI entry point in this process (TensorFlow is loaded once per test worker, not per command):
    ``cli(*args)`` returns returncode, stdout and stderr. ``-q``: the progress console holds no captured stream."""
    from types import SimpleNamespace

    from edgeprep.cli import main

    def call(*args):
        code = main(["-q", *map(str, args)])
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)
    return call


@pytest.fixture
def loud_cli(capsys, monkeypatch):
    """``cli`` without ``-q``: the progress console (what a terminal shows on stderr: steps, notes, warnings)
    writes into a buffer that ``stderr`` returns, after what the command wrote to stderr itself."""
    from io import StringIO
    from types import SimpleNamespace

    from rich.console import Console

    from edgeprep import progress
    from edgeprep.cli import main

    def call(*args):
        shown = StringIO()
        monkeypatch.setattr(progress, "console", Console(file=shown, width=200, highlight=False))
        code = main([*map(str, args)])
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err + shown.getvalue())
    return call


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run the real ``edgeprep`` CLI in a subprocess; returns the CompletedProcess (text mode)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgeprep", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def copy_manifest(tmp_path: Path) -> Path:
    """A copy of the committed data manifest and its files in ``tmp_path`` (tests may then alter it)."""
    for name in ("fashion_mnist.toml", "fashion_mnist_calib.npz", "fashion_mnist_eval.npz"):
        shutil.copy(DATA_DIR / name, tmp_path / name)
    return tmp_path / "fashion_mnist.toml"


# -- distribution over xdist workers (``--dist loadgroup`` in pyproject.toml) ------------------------------------
# A work unit is one test, or every test of one xdist group, which runs on one worker. A test that uses a
# module-scoped fixture of its own module joins the group of that module, so the fixture is built on one worker
# only; a module's own xdist_group marks replace that rule for the module. Modules listed here build their
# module fixtures cheaply: their tests are spread over the workers one by one.
SPREAD_MODULES = {"test_quantize.py", "test_convert_verify.py", "test_calibrate.py", "test_cli.py",
                  "test_coreml_reference.py", "test_mil_ops.py"}


def _uses_own_module_fixture(item) -> bool:
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    module_id = item.nodeid.split("::", 1)[0]
    return any(d[-1].scope == "module" and d[-1].baseid == module_id for d in defs.values() if d)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    by_hand = {item.nodeid.split("::", 1)[0] for item in items if item.get_closest_marker("xdist_group")}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        if module not in by_hand and Path(module).name not in SPREAD_MODULES and _uses_own_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(Path(module).stem))
    if getattr(config.option, "loadgroup", False) and items and hasattr(items[0], "_id"):
        # pytest >= 9 keeps the node id in ``_id``: xdist 3.8 still sets ``_nodeid`` to add the group to the id
        # (``test_x@group``, how the scheduler finds groups), which no longer takes. Do it here.
        from _pytest.nodeid import NodeId

        for item in items:
            names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                            for m in item.iter_markers("xdist_group")})
            if names:
                item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Groups are handed out first (largest first); then single tests in this order: slow ones first, so that
        # the last tests to start are short ones and neither worker waits long for the other at the end.
        items.sort(key=lambda item: not (item.get_closest_marker("xdist_group") or item.get_closest_marker("slow")))
