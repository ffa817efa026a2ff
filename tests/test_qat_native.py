"""QAT on a Mini-Xception-style model (SeparableConv2D residual modules, legacy .h5), labelled and label-free, through
the real CLI; and native crashes in a child process turned into one line and an exit code, with no child left.

The model is the one of issue 12: 64x64x1 input, a Conv2D(no bias) -> BN -> ReLU stem, four residual modules of two
SeparableConv2D(no bias) -> BN with a ReLU between, a 1x1 stride-2 Conv2D(no bias) -> BN shortcut and a 3x3
stride-2 max-pool on the main path, then a Conv2D to 7 classes, global average pooling and a softmax Activation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

CLASSES = 7


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seven learnable classes: a brightness level and an oriented grating per class, random phase, noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32) / 64.0
    angle = y[:, None, None] * np.pi / CLASSES
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    x = 0.2 + 0.08 * y[:, None, None] + 0.2 * np.sin(2 * np.pi * 8 * (xx * np.cos(angle) + yy * np.sin(angle))
                                                      + phase)
    x = x + rng.normal(0, 0.05, x.shape)
    return np.clip(x, 0, 1).astype(np.float32)[..., None], y.astype(np.int64)


def _mini_xception():
    import keras
    from keras import layers

    inp = keras.Input((64, 64, 1))
    x = inp
    for _ in range(2):
        x = layers.Conv2D(8, 3, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    for filters in (16, 32, 64, 128):
        r = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False)(x)
        r = layers.BatchNormalization()(r)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.Add()([x, r])
    x = layers.Conv2D(CLASSES, 3, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Activation("softmax")(x)
    return keras.Model(inp, out, name="mini_xception")


def test_importing_edgeprep_keeps_tensorflow_off_the_onednn_kernel_that_corrupts_the_heap():
    """The filter gradient of a 1x1 stride-2 'same' convolution (this model's shortcut) under TensorFlow 2.21's oneDNN
    kernels corrupts the heap on AVX-512 CPUs; a process that imported edgeprep first computes it, with the gradient
    TensorFlow's reference convolution gives, and an explicit TF_ENABLE_ONEDNN_OPTS is left as the user set it."""
    code = """
import os, sys
import edgeprep
import numpy as np, tensorflow as tf
print(os.environ["TF_ENABLE_ONEDNN_OPTS"])
x = tf.constant(np.random.default_rng(0).random((32, 64, 64, 8), dtype=np.float32))
w = tf.constant(np.random.default_rng(1).random((1, 1, 8, 16), dtype=np.float32))
g = tf.ones((32, 32, 32, 16))
for _ in range(5):
    gw = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=w.shape, out_backprop=g, strides=[1, 2, 2, 1],
                                         padding="SAME")
# a 1x1 stride-2 SAME conv sees the even rows and columns: its filter gradient is their channel sum
want = np.einsum("nhwc,nhwk->ck", x.numpy()[:, ::2, ::2, :], g.numpy())[None, None]
print(float(np.max(np.abs(gw.numpy() - want)) / float(np.max(np.abs(want)))))
"""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    flag, error = done.stdout.split()
    assert flag == "0" and float(error) < 1e-5
    env["TF_ENABLE_ONEDNN_OPTS"] = "1"
    chosen = subprocess.run([sys.executable, "-c", "import os, edgeprep; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert chosen.stdout.strip() == "1"


@pytest.fixture(scope="module")
def xception(tmp_path_factory):
    """The model briefly trained and saved as legacy .h5, labelled and unlabelled data, a small int8 target."""
    import keras

    root = tmp_path_factory.mktemp("xception")
    keras.utils.set_random_seed(0)
    model = _mini_xception()
    x, y = _images(256, seed=0)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    # one epoch leaves the BN moving statistics far from the weights (momentum 0.99): set them from the data
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for bn in bns:
        bn.momentum = 0.0
    model(x, training=True)
    for bn in bns:
        bn.momentum = 0.99
    model.save(root / "mini_xception.h5")
    xv, yv = _images(96, seed=1)
    np.savez(root / "labelled.npz", x=xv, y=yv)
    np.savez(root / "unlabelled.npz", x=xv)
    # labelled: fold-aware steps with batch statistics first, then frozen BN; label-free: frozen BN from the start
    # (one compiled step less: the test's time). No per-layer error (a float conversion more; see the export test)
    for name, freeze in (("labelled", 2), ("unlabelled", 0)):
        (root / f"{name}.toml").write_text(
            'name = "t"\ndescription = "int8 TFLite"\nformats = ["tflite"]\nprecisions = ["int8"]\nthreads = 2\n'
            '[quantize]\ncalibration_samples = 96\nlayer_error_samples = 0\n'
            f'[quantize.qat]\nbatch_size = 16\nfreeze_bn_steps = {freeze}\nlearning_rate = 1e-4\n'
            '[gates.int8]\nmax_accuracy_drop = 10.0\nmin_agreement = 0.8\n[verify]\nsamples = 96\n')
    return root


@pytest.mark.slow
@pytest.mark.parametrize("data, flag, objective", [("labelled", "--labels", "labels"),
                                                   ("unlabelled", None, "distillation")])
def test_qat_mini_xception_from_h5(xception, tmp_path, capsys, data, flag, objective):
    from edgeprep.cli import main

    out = tmp_path / "run"
    args = ["-q", "quantize", str(xception / "mini_xception.h5"), "--method", "qat", "--steps", "4",
            "--data", str(xception / f"{data}.npz"), "--target", str(xception / f"{data}.toml"), "--out", str(out)]
    rc = main(args + ([flag] if flag else []))
    assert rc == 0, capsys.readouterr().err[-3000:]
    rep = json.loads((out / "report.json").read_text())
    art = rep["artifacts"][0]
    assert (out / art["path"]).is_file() and art["path"].endswith(".tflite") and art["precision"] == "int8"
    # every SeparableConv2D is quantized (depthwise + pointwise int8, the BN folded): no float op, no variable
    ops = art["inspection"]["op_counts"]
    assert art["inspection"]["all_int8"] and art["inspection"]["float_ops"] == {} and "VAR_HANDLE" not in ops
    assert ops["DEPTHWISE_CONV_2D"] == 8
    qat = rep["quantize"]["qat"]
    folded = qat["plan"]["folded_batchnorm"]
    assert qat["plan"]["kept_float"] == [] and sum(n.startswith("separable") for n in folded) == 8
    assert qat["objective"].startswith(objective) and qat["steps"] == 4 and qat["process"] == "child"
    m = art["metrics"]
    assert m["agreement"] >= 0.9 and m["sqnr_db"] >= 20.0, m
    if flag:
        assert rep["reference"]["accuracy"] > 0.5 and abs(m["accuracy"] - rep["reference"]["accuracy"]) <= 0.05, m
        assert qat["bn_frozen_at_step"] == 2 and len(qat["bn_divergence"]) == 14


def test_layers_kept_float_export_constants_not_variables():
    """A layer QAT runs as-is (here LayerNormalization) is exported with its weights as constants: TFLite keeps
    read variables as VAR_HANDLE / READ_VARIABLE ops that nothing initialises without the XNNPACK delegate (the
    per-layer error's interpreter failed on them: "READ_VARIABLE failed to invoke")."""
    import keras
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgeprep.backends.tflite import qat as export
    from edgeprep.qat.model import QATModel

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="dense")(x))
    qat = QATModel(model, {"image": (0.0, 1.0), "conv": (0.0, 4.0), "ln": (-4.0, 4.0), "gap": (-2.0, 2.0),
                           "dense": (-4.0, 4.0)})
    it = Interpreter(model_content=export.to_tflite(qat, (16, 16, 1), io="float32"),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    assert not {"VAR_HANDLE", "READ_VARIABLE"} & {op["op_name"] for op in it._get_ops_details()}
    it.allocate_tensors()
    x = np.random.default_rng(0).random((1, 16, 16, 1), np.float32)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    got = it.get_tensor(it.get_output_details()[0]["index"])
    assert np.argmax(got) == np.argmax(model(x)) and np.abs(got - np.asarray(model(x))).max() < 0.05


# -- native crashes in a child process ---------------------------------------------------------------------------

def _segfault(pid_file: str):
    from edgeprep import isolation

    Path(pid_file).write_text(str(os.getpid()))
    isolation.phase("in the first training step")
    os.kill(os.getpid(), signal.SIGSEGV)


def _read_address_zero(pid_file: str):
    import ctypes

    from edgeprep import isolation

    Path(pid_file).write_text(str(os.getpid()))
    isolation.phase("while reading address 0")
    ctypes.string_at(0)


def _sleep(pid_file: str):
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(120)


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """The process has exited (a zombie of a dead parent counts: it runs nothing)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _children() -> set[int]:
    me = str(os.getpid())
    out = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                    out.add(int(p.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    return out


@pytest.mark.parametrize("crash, where", [(_segfault, "in the first training step"),
                                          (_read_address_zero, "while reading address 0")])
def test_a_native_crash_is_one_line_and_exit_code_3(tmp_path, crash, where):
    from edgeprep import isolation
    from edgeprep.errors import ToolchainCrash

    before = _children()
    with pytest.raises(ToolchainCrash) as info:
        isolation.run(crash, str(tmp_path / "pid"), what="QAT training")
    msg = str(info.value)
    assert msg == (f"QAT training crashed natively (SIGSEGV) {where}: rerun with --debug for the toolchain's "
                   "output") and "\n" not in msg
    assert info.value.exit_code == 3
    assert _gone(int((tmp_path / "pid").read_text())) and _children() <= before


def test_the_cli_prints_a_native_crash_as_one_line(tmp_path, capsys):
    import click

    from edgeprep import cli, isolation

    @click.command("crash-test")
    def crash_test():
        isolation.run(_segfault, str(tmp_path / "pid"), what="QAT training")

    cli.cli.add_command(crash_test)
    try:
        rc = cli.main(["crash-test"])
    finally:
        cli.cli.commands.pop("crash-test", None)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and err == ["edgeprep: error: QAT training crashed natively (SIGSEGV) in the first training step: "
                               "rerun with --debug for the toolchain's output"], err


def test_an_interrupted_parent_stops_its_child(tmp_path):
    """Ctrl-C (and SIGTERM, which the CLI raises as a KeyboardInterrupt) while the child runs: the child is
    stopped and reaped before the interrupt goes on."""
    from edgeprep import isolation

    def interrupt(*_):
        raise KeyboardInterrupt

    pid_file = tmp_path / "pid"
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 3.0)
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            isolation.run(_sleep, str(pid_file), what="a sleep")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert time.monotonic() - start < 15
    assert _gone(int(pid_file.read_text()), timeout=0.5)


def test_a_killed_parent_takes_its_child_along(tmp_path):
    """SIGKILL leaves the parent no chance to clean up: the kernel stops the child (PR_SET_PDEATHSIG)."""
    pid_file = tmp_path / "pid"
    tests = str(Path(__file__).resolve().parent)
    code = (f"import sys; sys.path.insert(0, {tests!r}); import test_qat_native as t; "
            f"from edgeprep import isolation; isolation.run(t._sleep, {str(pid_file)!r}, what='a sleep')")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent)
    try:
        end = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < end and parent.poll() is None, "the child did not start"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        parent.kill()
        parent.wait(10)
        gone = _gone(child)
        if not gone:
            os.kill(child, signal.SIGKILL)
        assert gone, "the child outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
