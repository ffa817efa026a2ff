"""Per-format options: the ``[tflite]``, ``[openvino]`` and ``[coreml]`` tables of a target profile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class TFLiteOptions:
    int8_io: Literal["int8", "uint8", "float32"] = "int8"   # input/output tensor type of full-integer models
    xnnpack: bool = True                                     # run with the XNNPACK delegate (LiteRT default)


@dataclass(frozen=True)
class OpenVINOOptions:
    device: str = "CPU"
    # Precision the CPU plugin executes in. The plugin's default is bf16 on CPUs with AVX512-BF16/AMX, which moves
    # numerics measurably; verification uses f32 unless the target says otherwise. "default" = plugin's choice.
    inference_precision: Literal["f32", "bf16", "f16", "default"] = "f32"
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"
    nncf_preset: Literal["performance", "mixed"] = "performance"  # NNCF PTQ: symmetric vs asymmetric activations


@dataclass(frozen=True)
class CoreMLOptions:
    minimum_deployment_target: Literal["iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15"] = "iOS16"
    compute_units: Literal["ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"] = "ALL"
    # int8 means 8-bit weights (linear symmetric, per channel) with fp16 activations: Core ML's W8A16.
    # Weights with fewer elements than this stay fp16 (coremltools' own default threshold is 2048).
    weight_threshold: int = 2048

    def __post_init__(self) -> None:
        if self.weight_threshold < 0:
            raise ValueError("weight_threshold must be >= 0")
