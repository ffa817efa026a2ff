"""The fake-quant forward pass of a planned Keras model, and the quantizer state it trains.

Weights: per-output-channel (Dense: per-tensor) symmetric int8 (narrow range, zero point 0, as TFLite's
int8 spec) computed on the BN-folded kernel ``w * gamma / sqrt(var + eps)``. A SeparableConv2D is the pair of ops
the converters emit for it: the depthwise conv (per-channel int8 kernel), an activation quantizer on its output
(range point ``<layer>/depthwise``), then the 1x1 pointwise conv, which takes the folded BN. Fold-aware training
(Jacob et al. 2018, Krishnamoorthi 2018):
before the freeze the batch statistics are used — synchronized across replicas, so data-parallel training sees
the global batch — via the correction ``sqrt(var_moving + eps) / sqrt(var_batch + eps)``, and the moving
statistics are updated; after the freeze the graph is exactly the inference graph with moving statistics.

Activations: ``fake_quant_with_min_max_vars`` with ranges initialised from calibration and tracked by an
exponential moving average of the (replica-averaged) batch min/max. Softmax/sigmoid/tanh outputs use the fixed
ranges TFLite's int8 kernels require. Every int8 tensor of the converted graph has a range point — also those
inside one Keras layer (``inner_points``): a converter keeps an op in float when a tensor it reads or writes has
no range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeprep.qat.graph import FIXED_RANGE, FUSED, Step, plan


def kernel_kind(layer) -> str:
    """How a linear layer's weights are laid out: dense, depthwise, separable or conv."""
    return {"Dense": "dense", "DepthwiseConv2D": "depthwise", "SeparableConv2D": "separable"}.get(
        type(layer).__name__, "conv")


def mid_point(s: Step) -> str | None:
    """The range point inside a linear step (a SeparableConv2D's depthwise output), or None."""
    return f"{s.name}/depthwise" if kernel_kind(s.layer) == "separable" else None


def preact_point(s: Step) -> str | None:
    """The range point on a linear step's pre-activation output, when its built-in activation is one that int8
    graphs run as a separate op (swish, hard-swish, leaky ReLU, ELU: the conv's output is an int8 tensor)."""
    return f"{s.name}/preact" if s.activation not in FUSED and s.activation not in FIXED_RANGE else None


def _rescaling_constants(layer) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(layer.scale, np.float32), np.asarray(layer.offset, np.float32)


def inner_points(s: Step) -> list[str]:
    """Range points inside one step: the int8 tensors between the ops a converter emits for it. Without them those
    ops run in float (TFLite keeps an op float when a tensor it reads or writes has no range): a SeparableConv2D's
    depthwise output, a conv's pre-activation output (``preact_point``), a Rescaling's ``x * scale`` before
    ``+ offset``, and the running sums of an Average before the division."""
    cls = type(s.layer).__name__
    if s.kind == "linear":
        return [p for p in (mid_point(s), preact_point(s)) if p]
    if s.kind == "quant" and cls == "Rescaling":
        scale, offset = _rescaling_constants(s.layer)
        return [f"{s.name}/scale"] if np.any(scale != 1.0) and np.any(offset != 0.0) else []
    if s.kind == "quant" and cls == "Average":
        return [f"{s.name}/sum{k}" for k in range(1, len(s.node.input_tensors))]
    return []


def fold_factors(gamma, beta, mean, var, eps):
    """BatchNorm as a per-channel affine ``y = x * scale + shift`` on TensorFlow tensors, inside the trained graph
    (gradients flow to gamma and beta). The exported, numpy side folds with ``edgeprep.bn.maths``."""
    scale = gamma / (var + eps) ** 0.5
    return scale, beta - mean * scale


@dataclass
class Mode:
    training: bool = False     # update moving statistics and activation ranges
    batch_stats: bool = False  # fold-aware: use (synchronized) batch statistics with the correction factor
    quantize: bool = True      # False: the same graph in float (reference for per-layer error, teacher)
    # layer names left in float (export-time keep-float), their output included: TFLite quantizes any op whose
    # tensors all have ranges, so the op a kept layer feeds reads a float tensor and runs in float too
    keep: frozenset = frozenset()
    record: bool = False       # keep every range point's float value in ``QATModel.recorded`` (calibration)
    export: bool = False       # weights folded in numpy and embedded as constants, so converters fold them
    # linear steps whose input and pre-activation output are kept in ``QATModel.recorded`` as ``<name>/@in``
    # and ``<name>/@out`` (post-training algorithms: bias correction, AdaRound)
    taps: frozenset = frozenset()
    # False: weights quantized, activations left float (16-bit activations, weight-only int8)
    activations: bool = True
    snap: bool = False         # export: quantized weights as float constants on the grid (no FakeQuant op)


class QATModel:
    """Quantizer state (tf.Variables) and the forward pass over ``steps`` of ``model``.

    ``state`` maps names to initial numpy values (activation ranges ``<layer>:min/max``, folded BN statistics
    ``<bn>:mean/var``); create it inside ``strategy.scope()`` for distributed training.
    """

    def __init__(self, model, ranges: dict[str, tuple[float, float]], ema_decay: float = 0.99,
                 state: dict[str, np.ndarray] | None = None, _calibrating: bool = False, track_ranges: bool = True):
        import tensorflow as tf

        self.model = model
        self.track_ranges = track_ranges    # training moves the activation ranges (EMA of batch min/max)
        self.steps: list[Step] = plan(model)
        # post-training quantization parameters that replace a linear step's folded (kernel, bias) in the
        # quantized export graph (``edgeprep.ptq``: AdaRound's rounded kernels, bias-corrected biases); the float
        # twin (``quantize=False``) keeps the model's own weights
        self.overrides: dict[str, tuple] = {}
        # what ``serving_function`` exports: activations fake-quantized (8) or left float for a converter that
        # quantizes them itself (16: TFLite's 16x8 mode; the kernels are then exported already on the grid)
        self.activation_bits = 8
        self.ema_decay = ema_decay
        self.vars: dict[str, tf.Variable] = {}
        agg = tf.VariableAggregation.MEAN
        for s in self.steps:
            if s.fold is not None:
                bn = s.fold
                for key, v in (("mean", bn.moving_mean), ("var", bn.moving_variance)):
                    init = np.asarray(state[f"{bn.name}:{key}"]) if state else np.asarray(v.numpy())
                    self.vars[f"{bn.name}:{key}"] = tf.Variable(init.astype(np.float32), trainable=False,
                                                                aggregation=agg, name=f"{bn.name}_{key}")
            if _calibrating:
                continue
            for name in ([s.name] if self.quantizes(s) else []) + inner_points(s):
                lo, hi = (state[f"{name}:min"], state[f"{name}:max"]) if state else ranges[name]
                self.vars[f"{name}:min"] = tf.Variable(np.float32(lo), trainable=False, aggregation=agg)
                self.vars[f"{name}:max"] = tf.Variable(np.float32(hi), trainable=False, aggregation=agg)

    @staticmethod
    def quantizes(s: Step) -> bool:
        """Does this step carry a trained activation range? (A linear step with a softmax/sigmoid activation
        has one for its pre-activation output; fixed-range outputs and same-scale ops have none.)"""
        if s.kind == "input":
            return True
        if s.kind == "linear":
            return s.quantize_output or s.activation in FIXED_RANGE
        if s.kind == "act":
            return s.quantize_output and s.activation not in FIXED_RANGE
        return s.kind in ("quant", "float", "bias") and s.quantize_output

    def prepare_export(self) -> None:
        """Fold every linear step's kernel in numpy, and read the variables of layers run as-is (eagerly), for
        ``Mode(export=True)`` traces."""
        self.export_weights = {s.name: self.folded_numpy(s) for s in self.steps if s.kind == "linear"}
        self.export_variables = {
            s.name: ([v.numpy() for v in s.layer.trainable_variables],
                     [v.numpy() for v in s.layer.non_trainable_variables])
            for s in self.steps
            if s.kind not in ("input", "linear", "folded") and getattr(s.layer, "variables", None)}

    def serving_function(self, input_shape: tuple, quantize: bool = True, keep: frozenset = frozenset(),
                         snap: bool | None = None):
        """A batch-1 concrete function of the inference graph (fake quant on unless ``quantize`` is False), for a
        backend's ``export_qat``. With 16-bit activations the kernels are exported as float constants already on
        the int8 grid (``snap``, the default: a converter that quantizes weights itself, TFLite's 16x8 mode) or
        with ``snap=False`` as FakeQuantize of constants (OpenVINO, which stores those as int8)."""
        import tensorflow as tf

        spec = tf.TensorSpec((1, *input_shape), tf.float32, name="input")
        self.prepare_export()

        @tf.function(input_signature=[spec], autograph=False)
        def serve(x):
            act = self.activation_bits == 8
            out, _, _ = self(x, Mode(quantize=quantize, keep=keep, export=True, activations=act,
                                     snap=not act if snap is None else snap))
            return out

        return serve.get_concrete_function()

    def variables_module(self):
        """A ``tf.Module`` tracking the model's and the quantizers' variables (what converters save or freeze)."""
        import tensorflow as tf

        mod = tf.Module()
        mod.model_vars = list(self.model.variables)
        mod.qat_vars = list(self.vars.values())
        return mod

    def state_numpy(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v.numpy()) for k, v in self.vars.items()}

    # -- the forward pass ------------------------------------------------------------------------------------

    def __call__(self, x, mode: Mode):
        """Returns ``(output, logits, bn_divergence)``; ``logits`` is the pre-softmax tensor when the model
        ends in a softmax, and ``bn_divergence`` maps folded BN names to a per-replica divergence scalar."""
        self._logits = None
        self._divergence = {}
        self.recorded = {}
        values = self.start(x)
        self.run_steps(values, self.steps, mode)
        out = values[id(self._graph.outputs[0])]
        return out, (self._logits if self._logits is not None else out), dict(self._divergence)

    def start(self, x) -> dict:
        """The tensors of a pass before its first step: the model input (``run_steps`` adds the others)."""
        return {id(self._graph.inputs[0]): x}

    def run_steps(self, values: dict, steps, mode: Mode) -> None:
        """Run ``steps`` (consecutive, in order) on ``values`` (Keras tensor id -> value, from ``start`` and earlier
        calls), adding their outputs. Post-training algorithms resume a pass where it stopped rather than start
        each partial pass from the input (``edgeprep.ptq.walk``); ``recorded`` is not reset here."""
        import tensorflow as tf

        for s in steps:
            if s.kind == "input":
                out = self._act_quant(s, values[id(self._graph.inputs[0])], mode)
            else:
                args, kwargs = s.node.arguments.fill_in(values)
                with tf.name_scope(s.name):         # converted graphs name their ops after the Keras layer
                    out = self._step(s, args, kwargs, mode)
            for t in s.node.outputs:
                values[id(t)] = out

    @property
    def _graph(self):
        from edgeprep.qat.graph import functional_of

        return functional_of(self.model)

    def _step(self, s: Step, args, kwargs, mode: Mode):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("training", "mask")}
        q = mode.quantize and s.name not in mode.keep
        if s.kind == "folded":
            return args[0]                      # already applied by its linear step
        if s.kind == "linear":
            return self._linear(s, args[0], mode, q)
        if s.kind == "act" and s.activation in FIXED_RANGE:
            if s is self.steps[-1] or self._is_output(s):
                self._logits = args[0]
            y = self._call_layer(s, args, kwargs, mode)
            return self._fixed(y, s.activation) if q and mode.activations else y
        if inner_points(s):      # Rescaling, Average: the ops a converter emits, each int8
            y = (self._rescaling if type(s.layer).__name__ == "Rescaling" else self._average)(s, args[0], mode, q)
        else:
            y = self._call_layer(s, args, kwargs, mode)
        if s.kind == "same" or not s.quantize_output:
            return y
        return self._act_quant(s, y, mode)

    def _rescaling(self, s: Step, x, mode: Mode, q: bool):
        """``x * scale + offset`` with the product quantized (TFLite emits a MUL and an ADD)."""
        import tensorflow as tf

        scale, offset = _rescaling_constants(s.layer)
        y = self._range_point(inner_points(s)[0], tf.cast(x, tf.float32) * tf.constant(scale), mode, q)
        return y + tf.constant(offset)

    def _average(self, s: Step, xs, mode: Mode, q: bool):
        """The inputs summed one by one, each running sum quantized, then divided (TFLite: ADDs and a MUL)."""
        points = inner_points(s)
        y = xs[0]
        for name, x in zip(points, xs[1:]):
            y = self._range_point(name, y + x, mode, q)
        return y * (1.0 / len(xs))

    def _call_layer(self, s: Step, args, kwargs, mode: Mode):
        """A layer run as-is. For export its variables are read as constants (``stateless_call``), so converters
        fold them instead of keeping resource variables (TFLite VAR_HANDLE / READ_VARIABLE ops, never
        initialised in the converted model)."""
        if _takes_training(s.layer):
            kwargs = {**kwargs, "training": False}
        if not mode.export or s.name not in self.export_variables:
            return s.layer(*args, **kwargs)
        import tensorflow as tf

        trainable, frozen = ([tf.constant(v) for v in vs] for vs in self.export_variables[s.name])
        return s.layer.stateless_call(trainable, frozen, *args, **kwargs)[0]

    def _is_output(self, s: Step) -> bool:
        return any(id(t) == id(self._graph.outputs[0]) for t in s.node.outputs)

    def _fixed(self, y, activation: str):
        import tensorflow as tf

        lo, hi = FIXED_RANGE[activation]
        return tf.quantization.fake_quant_with_min_max_vars(y, lo, hi, num_bits=8)

    def _act_quant(self, s: Step, y, mode: Mode):
        if not self.quantizes(s):
            return y
        return self._range_point(s.name, y, mode, mode.quantize and s.name not in mode.keep)

    def _range_point(self, name: str, y, mode: Mode, q: bool):
        """Record (calibration) and fake-quantize ``y`` with the trained range ``name``."""
        import tensorflow as tf

        if mode.record:
            self.recorded[name] = y
        if not q or not mode.activations:
            return y
        vmin, vmax = self.vars[f"{name}:min"], self.vars[f"{name}:max"]
        if mode.training and self.track_ranges:
            ctx = tf.distribute.get_replica_context()
            bmin, bmax = tf.reduce_min(y), tf.reduce_max(y)
            if ctx is not None and ctx.num_replicas_in_sync > 1:  # the global batch's extremes, as one device
                both = ctx.all_gather(tf.stack([bmin, bmax])[None], axis=0)
                bmin, bmax = tf.reduce_min(both[:, 0]), tf.reduce_max(both[:, 1])
            d = self.ema_decay
            vmin.assign(tf.minimum(vmin * d + bmin * (1 - d), 0.0))
            vmax.assign(tf.maximum(vmax * d + bmax * (1 - d), 0.0))
        return tf.quantization.fake_quant_with_min_max_vars(y, vmin, vmax, num_bits=8)

    def _linear(self, s: Step, x, mode: Mode, q: bool):
        import tensorflow as tf

        layer = s.layer
        kernel = _kernel(layer)
        bias = tf.convert_to_tensor(layer.bias) if layer.use_bias else None
        mid = (lambda t: self._range_point(mid_point(s), t, mode, q)) if mid_point(s) else None
        if s.name in mode.taps:
            self.recorded[f"{s.name}/@in"] = x
        if mode.export:
            w, b = self.overrides.get(s.name, self.export_weights[s.name]) if q else self.export_weights[s.name]
            if q and mode.snap:
                from edgeprep.ptq.grid import nearest_kernels

                w = _constant(nearest_kernels(w, kernel_kind(layer)))
            y = apply_linear(layer, x, self._weights(w, layer, constant=True) if q and not mode.snap else
                             _constant(w) if not q else w, mid)
            y = y + tf.constant(b)
        elif s.fold is None:
            w = self._weights(kernel, layer) if q else kernel
            y = apply_linear(layer, x, w, mid)
            if bias is not None:
                y = y + bias
        else:
            y = self._folded(s, x, kernel, bias, mode, q, mid)
        if s.name in mode.taps:
            self.recorded[f"{s.name}/@out"] = y
        act = s.activation
        if act in FIXED_RANGE:
            y = self._act_quant(s, y, mode)
            self._logits = y
            out = layer.activation(y)
            return self._fixed(out, act) if q and mode.activations else out
        if preact_point(s):
            y = self._range_point(preact_point(s), y, mode, q)
        y = layer.activation(y)
        return self._act_quant(s, y, mode) if s.quantize_output else y

    def folded_numpy(self, s: Step) -> tuple:
        """The (BN-folded) float kernel and bias of a linear step, as numpy arrays. A SeparableConv2D's kernel is
        the pair ``(depthwise, pointwise)``; the BN folds into the pointwise one."""
        from edgeprep.bn.maths import fold_bn_params

        layer = s.layer
        kind = kernel_kind(layer)
        bias = np.asarray(layer.bias.numpy(), np.float32) if layer.use_bias else None
        if kind == "separable":
            dw = np.asarray(layer.depthwise_kernel.numpy(), np.float32)
            w = np.asarray(layer.pointwise_kernel.numpy(), np.float32)
        else:
            w = np.asarray(layer.kernel.numpy(), np.float32)
        if s.fold is None:
            w, bias = w, bias if bias is not None else np.zeros(
                w.shape[-2] * w.shape[-1] if kind == "depthwise" else w.shape[-1], np.float32)
        else:
            bn = s.fold
            w, bias = fold_bn_params(w, bias, bn.gamma.numpy() if bn.scale else None,
                                     bn.beta.numpy() if bn.center else None, self.vars[f"{bn.name}:mean"].numpy(),
                                     self.vars[f"{bn.name}:var"].numpy(), bn.epsilon,
                                     channel_axis=(2, 3) if kind == "depthwise" else -1)
        return ((dw, w) if kind == "separable" else w), bias

    def _weights(self, w, layer, constant: bool = False, kind: str | None = None):
        """Per-output-channel symmetric fake quantization (narrow range [-127, 127])."""
        import tensorflow as tf

        kind = kind or kernel_kind(layer)
        if kind == "separable":   # each kernel per its own output channels: depthwise (in * mult), pointwise (out)
            dw, pw = w
            return (self._weights(dw, layer, constant, "depthwise"), self._weights(pw, layer, constant, "conv"))
        depthwise = kind == "depthwise"
        if kind == "dense":
            # per-tensor for Dense (as TFMOT): TFLite's FULLY_CONNECTED stores the kernel transposed, and the
            # converter cannot move a per-channel quantization axis through that transpose
            m = float(np.maximum(np.abs(w).max(), 1e-8)) if constant else tf.stop_gradient(
                tf.maximum(tf.reduce_max(tf.abs(w)), 1e-8))
            w = tf.constant(np.asarray(w, np.float32)) if constant else w
            return tf.quantization.fake_quant_with_min_max_vars(w, -m, m, num_bits=8, narrow_range=True)
        if constant:  # export: a constant kernel with constant ranges, which converters fold into int8 weights
            wn = np.asarray(w, np.float32)
            flat = wn.reshape(*wn.shape[:-2], -1) if depthwise else wn
            m = np.maximum(np.abs(flat).max(axis=tuple(range(flat.ndim - 1))), 1e-8).astype(np.float32)
            fq = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                tf.constant(flat), tf.constant(-m), tf.constant(m), num_bits=8, narrow_range=True)
            return tf.reshape(fq, wn.shape) if depthwise else fq
        shape = tf.shape(w)
        flat = tf.reshape(w, tf.concat([shape[:-2], [-1]], 0)) if depthwise else w
        axes = list(range(len(flat.shape) - 1))
        m = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(flat), axis=axes), 1e-8))
        fq = tf.quantization.fake_quant_with_min_max_vars_per_channel(flat, -m, m, num_bits=8, narrow_range=True)
        return tf.reshape(fq, shape) if depthwise else fq

    def _folded(self, s: Step, x, kernel, bias, mode: Mode, q: bool, mid=None):
        import tensorflow as tf

        bn = s.fold
        eps = bn.epsilon
        gamma = tf.convert_to_tensor(bn.gamma) if bn.scale else 1.0
        beta = tf.convert_to_tensor(bn.beta) if bn.center else 0.0
        mean_v, var_v = self.vars[f"{bn.name}:mean"], self.vars[f"{bn.name}:var"]
        kind = kernel_kind(s.layer)

        def scaled(w, scale):
            if kind == "separable":  # the BN scales the pointwise conv's output channels
                return w[0], w[1] * scale
            if kind == "depthwise":  # kernel (kh, kw, in, mult); output channel = in * mult + m
                return w * tf.reshape(scale, tf.shape(w)[-2:])
            return w * scale

        b = bias if bias is not None else 0.0
        scale_mov, _ = fold_factors(gamma, beta, mean_v, var_v, eps)
        w_fold = scaled(kernel, scale_mov)
        w_q = self._weights(w_fold, s.layer) if q else w_fold
        if not mode.batch_stats:
            return apply_linear(s.layer, x, w_q, mid) + (beta + (b - mean_v) * scale_mov)
        # fold-aware training with batch statistics of the float conv output, synchronized across replicas
        z = apply_linear(s.layer, x, kernel) + b
        axes = list(range(len(z.shape) - 1))
        local_mean = tf.reduce_mean(z, axis=axes)
        local_sq = tf.reduce_mean(tf.square(z), axis=axes)
        mean, sq = local_mean, local_sq
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            mean, sq = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, [local_mean, local_sq])
        var = tf.maximum(sq - tf.square(mean), 0.0)
        local_var = tf.maximum(local_sq - tf.square(local_mean), 0.0)
        self._divergence[bn.name] = tf.stack([
            tf.reduce_max(tf.abs(local_mean - mean) / tf.sqrt(var + eps)),
            tf.reduce_max(tf.abs(tf.sqrt(local_var + eps) / tf.sqrt(var + eps) - 1.0))])
        if mode.training:
            m = bn.momentum
            n = tf.cast(tf.reduce_prod(tf.shape(z)[:-1]), tf.float32)
            if ctx is not None:
                n = n * ctx.num_replicas_in_sync
            unbiased = var * n / tf.maximum(n - 1.0, 1.0)
            mean_v.assign(mean_v * m + tf.stop_gradient(mean) * (1 - m))
            var_v.assign(var_v * m + tf.stop_gradient(unbiased) * (1 - m))
        correction = tf.stop_gradient(tf.sqrt(var_v + eps) / tf.sqrt(var + eps))
        return apply_linear(s.layer, x, w_q, mid) * correction + (beta + (b - mean) * gamma / tf.sqrt(var + eps))


def _kernel(layer):
    """The layer's kernel as a tensor (a SeparableConv2D's: the pair depthwise, pointwise)."""
    import tensorflow as tf

    if kernel_kind(layer) == "separable":
        return tf.convert_to_tensor(layer.depthwise_kernel), tf.convert_to_tensor(layer.pointwise_kernel)
    return tf.convert_to_tensor(layer.kernel)


def _constant(w):
    import tensorflow as tf

    return tuple(tf.constant(k) for k in w) if isinstance(w, tuple) else tf.constant(w)


def apply_linear(layer, x, kernel, mid=None):
    """The layer's linear operation with a given kernel (no bias, no activation). For a SeparableConv2D, ``mid``
    (when given) is applied to the depthwise output before the pointwise conv: the int8 tensor between the two
    ops of the converted model."""
    from keras import ops

    kind = kernel_kind(layer)
    if kind == "dense":
        return ops.matmul(x, kernel)
    if kind in ("depthwise", "separable"):
        dw = kernel[0] if kind == "separable" else kernel
        y = ops.depthwise_conv(x, dw, strides=layer.strides, padding=layer.padding,
                               data_format=layer.data_format, dilation_rate=layer.dilation_rate)
        if kind == "depthwise":
            return y
        return ops.conv(mid(y) if mid else y, kernel[1], strides=1, padding="valid", data_format=layer.data_format)
    return ops.conv(x, kernel, strides=layer.strides, padding=layer.padding, data_format=layer.data_format,
                    dilation_rate=layer.dilation_rate)


def _takes_training(layer) -> bool:
    import inspect

    try:
        return "training" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False
