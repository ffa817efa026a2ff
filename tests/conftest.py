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


@pytest.fixture(scope="session")
def trained_small(tmp_path_factory, calib_npz) -> Path:
    """A small CNN trained on the committed calibration images (about 74 % top-1 on the evaluation subset)."""
    import keras

    model = build_small_cnn()
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    x = calib_npz["x"].astype("float32") / 255.0
    model.fit(x, calib_npz["y"], epochs=12, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("models") / "small_cnn.keras"
    model.save(path)
    return path


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
