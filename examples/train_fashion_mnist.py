"""Train the example model: a small MobileNet-style CNN for Fashion-MNIST.

    apt-get install dataset-fashion-mnist          # the full 60k/10k splits live there
    python examples/train_fashion_mnist.py         # about 10 minutes on 2 CPU cores

Writes ``examples/fashion_mnist_cnn.keras`` and prints its float top-1 accuracy on the full 10,000-image test split
and on the 2,000-image evaluation subset committed in ``calibration_data/``.

The architecture exercises what edge deployment has to handle: Conv-BN-ReLU, depthwise-separable blocks
(DepthwiseConv-BN-ReLU then 1x1 Conv-BN-ReLU), two residual adds, and a BatchNorm after a Dense layer. The head
(1x1 reduction, Flatten, Dense 384) holds most of the 1.3M parameters, as classifier heads do: with per-channel int8,
every output channel carries ~28 bytes of scales, zero points and int32 bias, so a net with few weights per channel
cannot shrink to a quarter of its fp32 size however well it quantizes.
Input: float32 NHWC 28x28x1 scaled to [0, 1] (pixel / 255). Output: 10 softmax probabilities.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "calibration_data"))
from build_fashion_mnist import SOURCE, load_split  # noqa: E402


def build_model(width: int = 1):
    import keras
    from keras import layers

    def conv_bn_relu(x, filters, kernel, stride, name):
        x = layers.Conv2D(filters * width, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    def dw_separable(x, filters, stride, name):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
        x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
        x = layers.Conv2D(filters * width, 1, use_bias=False, name=f"{name}_pw")(x)
        x = layers.BatchNormalization(name=f"{name}_pw_bn")(x)
        return layers.ReLU(6.0, name=f"{name}_pw_relu")(x)

    inputs = keras.Input((28, 28, 1), name="image")
    x = conv_bn_relu(inputs, 32, 3, 1, "stem")
    x = dw_separable(x, 64, 2, "block1")                     # 14x14x64
    y = dw_separable(x, 64, 1, "block2")
    x = layers.Add(name="block2_add")([x, y])                 # residual
    x = dw_separable(x, 128, 2, "block3")                    # 7x7x128
    y = dw_separable(x, 128, 1, "block4")
    x = layers.Add(name="block4_add")([x, y])                 # residual
    x = dw_separable(x, 256, 1, "block5")
    x = conv_bn_relu(x, 64, 1, 1, "reduce")                 # 7x7x64: keep the spatial layout for the head
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(384, use_bias=False, name="fc")(x)      # most weights live here, as in real classifiers
    x = layers.BatchNormalization(name="fc_bn")(x)            # BN after Dense
    x = layers.ReLU(name="fc_relu")(x)
    x = layers.Dropout(0.2, name="drop")(x)
    outputs = layers.Dense(10, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="fashion_mnist_cnn")


def augment(x, y):
    """Training augmentation of one 28x28x1 image: a random horizontal flip and a shift of up to 2 pixels."""
    import tensorflow as tf

    x = tf.image.random_flip_left_right(x)
    x = tf.image.pad_to_bounding_box(x, 2, 2, 32, 32)
    x = tf.image.random_crop(x, (28, 28, 1))
    return x, y


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=HERE / "fashion_mnist_cnn.keras")
    args = ap.parse_args(argv)

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = load_split(SOURCE, "train")
    x_test, y_test = load_split(SOURCE, "test")
    x_train = x_train.astype("float32") / 255.0
    x_test = x_test.astype("float32") / 255.0

    model = build_model()
    model.summary()
    steps = args.epochs * int(np.ceil(len(x_train) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(10_000, seed=args.seed)
             .map(augment, num_parallel_calls=2).batch(args.batch_size).prefetch(2))
    model.fit(train, epochs=args.epochs, validation_data=(x_test, y_test), verbose=2)

    _, acc = model.evaluate(x_test, y_test, verbose=0)
    ev = np.load(HERE.parent / "calibration_data" / "fashion_mnist_eval.npz")
    sub = float(np.mean(np.argmax(model.predict(ev["x"].astype("float32") / 255.0, verbose=0), 1) == ev["y"]))
    tmp = args.out.with_name(args.out.stem + ".tmp.keras")
    deployable = build_model()              # a fresh, uncompiled copy: the file carries no optimizer state
    deployable.set_weights(model.get_weights())
    deployable.save(tmp)
    os.replace(tmp, args.out)
    print(f"saved {args.out} ({args.out.stat().st_size:,} bytes, {model.count_params():,} parameters)")
    print(f"float top-1: {acc:.4f} on the 10,000-image test split, {sub:.4f} on the 2,000-image evaluation subset")
    return 0


if __name__ == "__main__":
    sys.exit(main())
