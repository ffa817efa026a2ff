"""The ``[quantize]`` table: how post-training quantization is calibrated, and how QAT fine-tunes.

    [quantize]
    calibration_samples = 500      # samples drawn from the calibration data for int8 range estimation
    range_method = "minmax"        # "minmax", or "percentile" (clip activation ranges at `percentile`)
    keep_float = []                # layer names kept in float; ["auto"] = worst layers until the drop is met
    [quantize.ptq]                 # edgeprep's own PTQ (engine = "vendor": the converters' own)
    engine = "edgeprep"            # default "vendor" (the converters' own PTQ); "auto" measures both
    ranges = "mse"                 # minmax | percentile | mse (range_method above applies to engine = "vendor")
    cle = true
    adaround = true
    bias_correction = true
    [quantize.qat]                 # quantization-aware fine-tuning (`edgeprep quantize --method qat`)
    epochs = 3
    learning_rate = 1e-5
    start = "ptq"                  # from edgeprep PTQ's parameters ("float": the model as given)

Every value is validated when the profile is loaded; the resolved table is saved with the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Fewer calibration samples than this give noisy activation ranges: edgeprep warns with the number used.
MIN_CALIBRATION_SAMPLES = 100


def few_samples_warning(requested: int, available: int, source: str) -> str | None:
    """The one warning every int8 calibration gives (run, convert, quantize) when it uses too few samples: the
    ``requested`` number, or all ``available`` when there are fewer."""
    used = min(requested, available)
    if used >= MIN_CALIBRATION_SAMPLES:
        return None
    return (f"only {used} calibration samples used ({source} has {available}); activation ranges from fewer than "
            f"{MIN_CALIBRATION_SAMPLES} are noisy")


@dataclass(frozen=True)
class QATConfig:
    epochs: int = 3                    # passes over the training (calibration) data
    steps: int | None = None           # or a fixed number of optimizer steps (overrides epochs)
    batch_size: int = 32               # global batch size (split across replicas)
    learning_rate: float = 1e-5
    # Fold-aware training: BN batch statistics are used (and synchronized across replicas) for this many steps,
    # then frozen at their moving values. Short by default: QAT fine-tunes a converged model, and batch statistics
    # of small batches of un-augmented data are noisy and pull the moving statistics away from the ones the model
    # was trained with (on 5,000 held-out training images, 93 steps with batch statistics cost 2-8 dB of SQNR
    # and 0.1 points of top-1 against freezing after 10).
    freeze_bn_steps: int = 10
    ema_decay: float = 0.99            # activation ranges: exponential moving average of batch min/max
    temperature: float = 1.0           # distillation: softmax temperature of the logit KL
    distill: Literal["auto", "always", "never"] = "auto"   # auto: distil when the data has no labels
    seed: int = 0
    # Where fine-tuning starts. "ptq": from edgeprep's own PTQ ([quantize.ptq]: CLE-equalized weights, AdaRound's
    # kernels, corrected biases, searched activation ranges, which are then held fixed); "float": from the model
    # as given, activation ranges from min/max, tracked during training by ema_decay.
    start: Literal["ptq", "float"] = "ptq"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.steps is not None and self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.freeze_bn_steps < 0:
            raise ValueError("freeze_bn_steps must be >= 0 (0 = BN statistics frozen from the start)")
        if not 0 < self.learning_rate < 1:
            raise ValueError("learning_rate must be in (0, 1)")
        if not 0 <= self.ema_decay < 1:
            raise ValueError("ema_decay must be in [0, 1)")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")


@dataclass(frozen=True)
class PTQConfig:
    """``[quantize.ptq]``: edgeprep's own post-training quantization (``engine = "edgeprep"``).

    The algorithms run in this order; each is measured in ``make bench`` (README, "Quantization quality")."""

    # "edgeprep": our algorithms; "vendor": each converter's own PTQ; "auto": both converted and measured on the
    # calibration data, the one meeting the int8 gates nearer the float model kept, and edgeprep's with 16-bit
    # activations tried too (TFLite) when neither meets them (edgeprep.stages.ptq_choice); auto decides the
    # activation precision itself, so `activations` below applies to engine = "edgeprep" only
    engine: Literal["edgeprep", "vendor", "auto"] = "vendor"
    ranges: Literal["minmax", "percentile", "mse"] = "mse"   # activation range per tensor
    cle: bool = True                   # cross-layer equalization of conv->conv and depthwise->pointwise pairs
    adaround: bool = True              # learned up/down rounding of the int8 weights
    adaround_iterations: int = 300     # per layer
    bias_correction: bool = True       # empirical, per output channel
    samples: int = 256                 # calibration samples AdaRound and bias correction use
    # "int16": 16-bit activations with int8 weights (TFLite 16x8; OpenVINO, which has no int16 path on CPU, keeps
    # activations float; Core ML's int8 is fp16 activations anyway)
    activations: Literal["int8", "int16"] = "int8"

    def __post_init__(self) -> None:
        if self.adaround_iterations < 1:
            raise ValueError("adaround_iterations must be >= 1")
        if self.samples < 1:
            raise ValueError("samples must be >= 1")


@dataclass(frozen=True)
class QuantizeConfig:
    calibration_samples: int = 500     # samples drawn from the calibration data for int8 range estimation
    # How activation ranges are estimated from the calibration samples: "minmax" (the observed extremes, what
    # TFLite's calibrator records) or "percentile" (clip at the given percentile of |activation|, robust to
    # outliers). NNCF maps these to its MINMAX and MEAN_QUANTILE range estimators.
    range_method: Literal["minmax", "percentile"] = "minmax"
    percentile: float = 99.99
    # Layers kept in float (names as listed in the per-layer error report), or ["auto"]: the layers with the
    # worst SQNR are kept in float, one group at a time, until the target's int8 max_accuracy_drop is met.
    keep_float: tuple[str, ...] = ()
    keep_float_max_layers: int = 8     # auto: never keep more than this many layers in float
    layer_error_samples: int = 64      # evaluation samples used for the per-layer error report (0 = off)
    qat: QATConfig = QATConfig()
    ptq: PTQConfig = PTQConfig()

    def __post_init__(self) -> None:
        if self.calibration_samples < 1:
            raise ValueError("calibration_samples must be >= 1")
        if not 50 < self.percentile <= 100:
            raise ValueError("percentile must be in (50, 100]")
        if "auto" in self.keep_float and len(self.keep_float) > 1:
            raise ValueError("keep_float is either [\"auto\"] or a list of layer names, not both")
        if self.keep_float_max_layers < 1:
            raise ValueError("keep_float_max_layers must be >= 1")
        if self.layer_error_samples < 0:
            raise ValueError("layer_error_samples must be >= 0")

    @property
    def keep_float_auto(self) -> bool:
        return self.keep_float == ("auto",)
