"""Train the two "hard" benchmark models: 96x96 RGB Fashion-MNIST CNNs that are harder to quantize to int8.

    apt-get install dataset-fashion-mnist                         # the full 60k/10k splits live there
    python examples/train_hard_models.py --all                    # both models, 8-13 minutes each on 2 CPU cores
    python examples/train_hard_models.py --model sepres --epochs 8 --train-samples 20000

Writes ``examples/hard/mobilenetv3_small_fmnist.keras`` and ``examples/hard/sepres_fmnist.keras`` and prints each
model's float top-1 accuracy on the full 10,000-image test split and on the 2,000-image evaluation subset committed
in ``calibration_data/``. Use them with ``calibration_data/fashion_mnist_96rgb.toml``, whose [preprocess] table
reproduces the input pipeline below.

Models
- ``mobilenetv3``: ``keras.applications.MobileNetV3Small`` (alpha 0.75, random init, 10 classes, no built-in
  Rescaling layer): hard-swish, squeeze-and-excite (global pooling, hard-sigmoid gating, a broadcast multiply),
  5x5 depthwise convolutions and 1x1-conv classifier head. Activations with a wide, skewed range in few channels
  are what per-tensor int8 activations handle worst.
- ``sepres``: an Xception-style network: Conv-BN-ReLU stem (stride 2), four blocks of
  [ReLU, SeparableConv-BN, ReLU, SeparableConv-BN, MaxPool 3/2] added to a strided 1x1 Conv-BN shortcut
  (widths 32/64/128/192), then SeparableConv-BN-ReLU, global average pooling, dropout and a softmax Dense layer.
  The first block has no leading ReLU, as in Xception: the stem already ends in one. No layer has a bias before a
  BatchNorm. Separable convolutions (a depthwise then a pointwise kernel with no activation between them) and
  residual adds of un-activated BatchNorm outputs are the int8 stress points.

Input: float32 NHWC 96x96x3 in [0, 1]. The 28x28 grey images are resized in the input pipeline, not in the model,
exactly as edgeprep's [preprocess] does it: bilinear with half-pixel centres (``tf.image.resize``, no antialias) on
the raw pixel values, grey replicated to 3 channels, then pixel * (1/255). Output: 10 softmax probabilities.
Training: Adam with cosine decay, batch 64, a class-balanced fixed-seed subset of the training split (20,000
images by default), random horizontal flips and translations of up to 2 pixels (applied to the 28x28 images, before
the resize); BatchNorm momentum 0.99 while training. The validation accuracy printed each epoch is measured on 2,000
other training images, so the test split stays unseen until the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "calibration_data"))
from build_fashion_mnist import SOURCE, balanced_subset, load_split  # noqa: E402
from train_fashion_mnist import augment  # noqa: E402  (the example model's augmentation, the same here)

SIZE = (96, 96)
SCALE = 1.0 / 255.0
MODELS = ("mobilenetv3", "sepres")
FILE_NAMES = {"mobilenetv3": "mobilenetv3_small_fmnist", "sepres": "sepres_fmnist"}
LEARNING_RATES = {"mobilenetv3": 2e-3, "sepres": 2e-3}
EPOCHS = {"mobilenetv3": 6, "sepres": 6}
TRAIN_BN_MOMENTUM = 0.99


def build_mobilenetv3():
    import keras

    return keras.applications.MobileNetV3Small(
        input_shape=(*SIZE, 3), alpha=0.75, weights=None, classes=10, include_preprocessing=False,
        include_top=True, dropout_rate=0.2, name=FILE_NAMES["mobilenetv3"])


def build_sepres(widths: tuple[int, ...] = (32, 64, 128, 192), head: int = 256):
    import keras
    from keras import layers

    inputs = keras.Input((*SIZE, 3), name="image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)     # 48x48
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, filters in enumerate(widths, start=1):                                                # 24, 12, 6, 3
        name = f"block{i}"
        shortcut = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False, name=f"{name}_shortcut")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
        y = x if i == 1 else layers.ReLU(name=f"{name}_relu1")(x)     # the stem already ends in a ReLU
        y = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_sep1")(y)
        y = layers.BatchNormalization(name=f"{name}_sep1_bn")(y)
        y = layers.ReLU(name=f"{name}_relu2")(y)
        y = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_sep2")(y)
        y = layers.BatchNormalization(name=f"{name}_sep2_bn")(y)
        y = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(y)
        x = layers.Add(name=f"{name}_add")([y, shortcut])
    x = layers.SeparableConv2D(head, 3, padding="same", use_bias=False, name="head_sep")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.3, name="drop")(x)
    outputs = layers.Dense(10, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=FILE_NAMES["sepres"])


BUILDERS = {"mobilenetv3": build_mobilenetv3, "sepres": build_sepres}


def to_model_input(x):
    """Raw uint8 (or float) NHWC 28x28x1 batch -> float32 96x96x3 in [0, 1], as edgeprep's Preprocess
    (resize = [96, 96], channels = 3, scale = 1/255) does it: resize, then grey -> RGB, then scale."""
    import tensorflow as tf

    x = tf.cast(x, tf.float32)
    x = tf.image.resize(x, SIZE, method="bilinear")        # half-pixel centres, no antialiasing
    x = tf.repeat(x, 3, axis=-1)
    return x * tf.constant(SCALE, tf.float32)


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 250) -> float:
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices(x).batch(batch_size).map(to_model_input)
    pred = np.argmax(model.predict(data, verbose=0), axis=1)
    return float(np.mean(pred == y))


def train_one(kind: str, out: Path, args, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
              test: tuple[np.ndarray, np.ndarray], ev: tuple[np.ndarray, np.ndarray]) -> dict:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = train
    model = BUILDERS[kind]()
    # MobileNetV3's BatchNorm momentum 0.999 averages its moving statistics over ~1,000 steps, too slow to follow
    # a run of ~2,000: train with 0.99. Only training uses it; the saved (rebuilt) copy keeps the stock configuration.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.momentum > TRAIN_BN_MOMENTUM:
            layer.momentum = TRAIN_BN_MOMENTUM
    model.summary(line_length=110)
    steps = args.epochs * int(np.ceil(len(x_train) / args.batch_size))
    lr = args.lr if args.lr is not None else LEARNING_RATES[kind]
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    options = tf.data.Options()
    options.threading.private_threadpool_size = 2
    data = (tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(len(x_train), seed=args.seed)
            .map(augment, num_parallel_calls=2).batch(args.batch_size)
            .map(lambda x, y: (to_model_input(x), y), num_parallel_calls=2).prefetch(2).with_options(options))
    start = time.perf_counter()
    val_data = tf.data.Dataset.from_tensor_slices(val).batch(250).map(lambda x, y: (to_model_input(x), y))
    model.fit(data, epochs=args.epochs, validation_data=val_data, verbose=2)
    seconds = time.perf_counter() - start

    acc = evaluate(model, *test)
    sub = evaluate(model, *ev)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.keras")
    deployable = BUILDERS[kind]()           # a fresh, uncompiled copy: the file carries no optimizer state
    deployable.set_weights(model.get_weights())
    deployable.save(tmp)
    os.replace(tmp, out)
    print(f"saved {out} ({out.stat().st_size:,} bytes, {model.count_params():,} parameters)")
    print(f"{kind}: trained {args.epochs} epochs on {len(x_train):,} images in {seconds / 60:.1f} min")
    print(f"{kind}: float top-1: {acc:.4f} on the 10,000-image test split, {sub:.4f} on the 2,000-image "
          "evaluation subset")
    return {"model": kind, "file": str(out), "test": acc, "eval": sub, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", choices=MODELS)
    which.add_argument("--all", action="store_true", help="train both models, one after the other")
    ap.add_argument("--epochs", type=int, default=None, help=f"default: {EPOCHS['mobilenetv3']}")
    ap.add_argument("--train-samples", type=int, default=20_000,
                    help="class-balanced subset of the 60,000 training images (fixed seed)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=None, help="peak Adam learning rate (default 2e-3)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    ap.add_argument("--out", type=Path, default=HERE / "hard",
                    help="output directory (files are named after the model), or a .keras file with --model")
    args = ap.parse_args(argv)
    kinds = list(MODELS) if args.all else [args.model]
    if args.out.suffix == ".keras" and len(kinds) > 1:
        ap.error("--out names one .keras file; give a directory with --all")
    if not 1_000 <= args.train_samples <= 50_000 or args.train_samples % 10:
        ap.error("--train-samples must be a multiple of 10 between 1,000 and 50,000")
    if not (SOURCE / "train-images-idx3-ubyte.gz").exists():
        print(f"error: Fashion-MNIST not found in {SOURCE}; install it with "
              "'apt-get install dataset-fashion-mnist'", file=sys.stderr)
        return 2

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    x_train, y_train = load_split(SOURCE, "train")
    sel = balanced_subset(y_train, args.train_samples // 10, seed=args.seed)
    train = (x_train[sel], y_train[sel].astype(np.int32))
    rest = np.setdiff1d(np.arange(len(y_train)), sel)   # monitoring only: training images outside the subset
    held = np.random.default_rng(args.seed).choice(rest, 2_000, replace=False)
    val = (x_train[held], y_train[held].astype(np.int32))
    test = load_split(SOURCE, "test")
    npz = np.load(HERE.parent / "calibration_data" / "fashion_mnist_eval.npz")
    ev = (npz["x"], npz["y"])

    results = []
    for kind in kinds:
        out = args.out if args.out.suffix == ".keras" else args.out / f"{FILE_NAMES[kind]}.keras"
        run = argparse.Namespace(**vars(args))
        run.epochs = args.epochs if args.epochs is not None else EPOCHS[kind]
        results.append(train_one(kind, out, run, train, val, test, ev))
    for r in results:
        print(f"{r['model']:12s} {r['file']}: test {r['test']:.4f}, eval subset {r['eval']:.4f}, "
              f"{r['seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
