"""Tiny real Keras models that put BatchNormalization in every structure the BN stages must handle.

Each builder returns an untrained model whose BN layers carry non-trivial statistics and affine parameters
(``randomize_bn``), so a fold or a recalibration that ignored one of them would change the outputs measurably.
"""

from __future__ import annotations

import numpy as np


def randomize_bn(model, seed: int = 0) -> None:
    """Give every BN layer (nested ones too) stored statistics and gamma/beta far from the defaults."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.3, 3.0, n).astype("float32"))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            if layer.center:
                layer.beta.assign(rng.normal(0.0, 0.5, n).astype("float32"))


def _all_layers(model):
    import keras

    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def conv_variants(seed: int = 0):
    """Conv2D without bias, DepthwiseConv2D, SeparableConv2D, center/scale off, a BN chain, BN after Dense."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((12, 12, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_nobias")(inp)
    x = layers.BatchNormalization(name="bn_conv")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = layers.BatchNormalization(center=False, name="bn_dw_nocenter")(x)
    x = layers.ReLU(6.0, name="relu2")(x)
    x = layers.SeparableConv2D(12, 3, padding="same", use_bias=False, name="sep")(x)
    x = layers.BatchNormalization(scale=False, name="bn_sep_noscale")(x)
    x = layers.BatchNormalization(name="bn_chained")(x)      # a second BN right after the first one
    x = layers.ReLU(name="relu3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(16, name="fc")(x)
    x = layers.BatchNormalization(synchronized=True, name="bn_fc_sync")(x)
    x = layers.ReLU(name="relu4")(x)
    out = layers.Dense(5, activation="softmax", name="out")(x)
    return keras.Model(inp, out, name="conv_variants")


def unfoldable(seed: int = 0):
    """BNs that cannot fold into the layer before them: after an activation (one folds into the next, valid-padded
    conv; one cannot because the next conv zero-pads), after a conv with two consumers, after a shared conv, and a
    shared BN layer."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((12, 12, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = layers.ReLU(name="r1")(x)
    x = layers.BatchNormalization(name="bn_after_relu_into_next")(x)
    x = layers.Conv2D(8, 3, padding="valid", name="c2_valid")(x)      # 10x10
    x = layers.ReLU(name="r2")(x)
    x = layers.BatchNormalization(name="bn_after_relu_padded_next")(x)
    x = layers.Conv2D(8, 3, padding="same", name="c3_same")(x)
    branch = layers.Conv2D(8, 1, name="c4_two_consumers")(x)
    y = layers.BatchNormalization(name="bn_multi_consumer")(branch)
    x = layers.Add(name="add")([y, branch])
    shared = layers.Conv2D(8, 1, name="c5_shared")
    a = layers.BatchNormalization(name="bn_after_shared_conv")(shared(x))
    b = shared(layers.ReLU(name="r3")(x))
    shared_bn = layers.BatchNormalization(name="bn_shared")
    x = layers.Add(name="add2")([shared_bn(a), shared_bn(b)])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(4, name="out")(x)
    return keras.Model(inp, out, name="unfoldable")


def nested(seed: int = 0):
    """A BN inside a nested Functional model, one inside a nested Sequential, and one on the boundary."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inner_in = keras.Input((10, 10, 4))
    h = layers.Conv2D(6, 3, padding="same", use_bias=False, name="inner_conv")(inner_in)
    h = layers.BatchNormalization(name="inner_bn")(h)
    inner = keras.Model(inner_in, layers.ReLU(name="inner_relu")(h), name="inner_block")
    seq = keras.Sequential([keras.Input((6,)), layers.Dense(8, name="seq_fc"), layers.BatchNormalization(name="seq_bn"),
                            layers.ReLU(name="seq_relu")], name="inner_seq")
    inp = keras.Input((10, 10, 4), name="image")
    x = layers.Conv2D(4, 1, name="pre")(inp)
    x = inner(x)
    x = layers.BatchNormalization(name="outer_bn_after_submodel")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = seq(x)
    out = layers.Dense(3, name="out")(x)
    return keras.Model(inp, out, name="nested")


def sequential_conv1d(seed: int = 0):
    """A Sequential model with Conv1D -> BN and a BN on a non-last axis (which cannot fold)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((16, 3)),
        layers.Conv1D(6, 3, padding="same", use_bias=False, name="c1d"),
        layers.BatchNormalization(name="bn_c1d"),
        layers.ReLU(name="relu"),
        layers.Dense(5, name="fc_time"),
        layers.BatchNormalization(axis=1, name="bn_axis1"),      # normalizes the 16 time steps, not channels
        layers.Flatten(name="flat"),
        layers.Dense(4, name="out"),
    ], name="seq_conv1d")


def no_bn(seed: int = 0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(4, 3, name="c"), layers.Flatten(),
                             layers.Dense(2, name="out")], name="no_bn")


def under_mixed_float16(build):
    """``build()`` with the ``mixed_float16`` policy (fp16 compute, fp32 variables), as mixed-precision training
    leaves a model; the global policy is restored."""
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return build()
    finally:
        keras.mixed_precision.set_global_policy("float32")
