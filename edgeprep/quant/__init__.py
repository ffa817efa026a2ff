"""Quantization: per-backend post-training quantization helpers, per-layer error, keep-float search and
quantization-aware fine-tuning for Keras 3 (``edgeprep.quant.qat``).

Modules import their toolchain lazily; ``import edgeprep.quant`` loads nothing heavy.
"""
