"""Per-format options: the ``[tflite]``, ``[openvino]`` and ``[coreml]`` tables of a target profile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class TFLiteOptions:
    int8_io: Literal["int8", "uint8", "float32"] = "int8"   # input/output tensor type of full-integer models
    xnnpack: bool = True                                     # run with the XNNPACK delegate (LiteRT default)
    # int8: ops with no int8 kernel (SIN, CUMSUM, ...) stay float between DEQUANTIZE/QUANTIZE and are listed in
    # the artifact's inspection (float_ops). false refuses such a model instead (pure-integer accelerators).
    float_fallback: bool = True
    # int8: HARD_SWISH (every MobileNetV3) runs in float between its int8 tensors (DEQUANTIZE, HARD_SWISH, QUANTIZE).
    # XNNPACK takes HARD_SWISH in float only; an int8 one runs on the reference kernels and splits the delegated
    # graph: MobileNetV3Small's int8 was 3.1x its fp32 (20 partitions), with this 0.61x (1 partition; issue 16,
    # edgeprep/backends/tflite/hard_swish.py). Off when float_fallback is false (pure-integer targets).
    float_hard_swish: bool = True
    # The LiteRT API that verifies and benchmarks the artifacts: "interpreter" (the Interpreter API most apps use)
    # or "compiled" (LiteRT's CompiledModel API on its CPU accelerator, what litert-benchmark runs). Same kernels,
    # not the same thread pool: at 2 threads on a 2-vCPU machine a 0.03 ms model took 0.046 ms under the Interpreter
    # and 0.026 ms under CompiledModel (equal at 1 thread). Measure with the API your app uses.
    litert_api: Literal["interpreter", "compiled"] = "interpreter"

    @property
    def hard_swish_in_float(self) -> bool:
        """Whether int8 exports run HARD_SWISH in float: asked for, and float ops allowed at all."""
        return self.float_hard_swish and self.float_fallback

    def __post_init__(self) -> None:
        if self.litert_api == "compiled" and not self.xnnpack:
            raise ValueError("litert_api = \"compiled\" runs on LiteRT's CPU accelerator (XNNPACK): xnnpack = false "
                             "needs litert_api = \"interpreter\"")


@dataclass(frozen=True)
class IgnoredScope:
    """``[openvino.ignored_scope]``: OpenVINO node names, regular expressions over names, or op types."""

    names: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    types: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.names or self.patterns or self.types)


@dataclass(frozen=True)
class OpenVINOOptions:
    device: str = "CPU"
    # Precision the CPU plugin executes in. The plugin's default is bf16 on CPUs with AVX512-BF16/AMX, which moves
    # numerics measurably; verification uses f32 unless the target says otherwise. "default" = plugin's choice.
    inference_precision: Literal["f32", "bf16", "f16", "default"] = "f32"
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"
    nncf_preset: Literal["performance", "mixed"] = "performance"  # NNCF PTQ: symmetric vs asymmetric activations
    # NNCF's bias correction after quantization. "accurate" by default: measured in make bench ONLY=ptq, NNCF's own
    # default ("fast") left the example CNN's int8 at 20.3 dB SQNR, agreement 0.972 ("accurate": 37.7 dB, 0.9975; the
    # Xception-style model 27.9 -> 35.2 dB) for a few seconds more
    bias_correction: Literal["fast", "accurate", "none"] = "accurate"
    ignored_scope: IgnoredScope = IgnoredScope()   # nodes NNCF leaves in float
    # NNCF's accuracy-controlled quantization: layers are reverted to float until the accuracy drop on the
    # calibration data is within the target's [gates.int8] max_accuracy_drop (agreement with the float model
    # when the data has no labels).
    accuracy_control: bool = False


@dataclass(frozen=True)
class CoreMLOptions:
    minimum_deployment_target: Literal["iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15"] = "iOS16"
    compute_units: Literal["ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"] = "ALL"
    # int8 means 8-bit weights (linear symmetric, per channel) with fp16 activations: Core ML's W8A16.
    # Weights with fewer elements than this stay fp16 (coremltools' own default threshold is 2048).
    weight_threshold: int = 2048
    # How int8 compresses weights: "linear8" (8-bit linear symmetric per channel) or k-means palettization with a
    # 4-, 6- or 8-bit lookup table per tensor ("palettize4" is ~8x smaller than fp32).
    weight_compression: Literal["linear8", "palettize8", "palettize6", "palettize4"] = "linear8"
    # 8-bit activations (W8A8) need calibration by Core ML prediction, which runs on macOS only: elsewhere the
    # artifact keeps fp16 activations and the report says so.
    quantize_activations: bool = False

    def __post_init__(self) -> None:
        if self.weight_threshold < 0:
            raise ValueError("weight_threshold must be >= 0")
