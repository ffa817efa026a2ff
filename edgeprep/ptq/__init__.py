"""edgeprep's own post-training quantization: the parameters are ours, every backend reproduces them.

One float pass over the calibration data collects what the algorithms declare they need (``stats``); the
algorithms then work on the Keras graph and on the fake-quant plan of ``edgeprep.qat`` (one step per layer call):

    cle        cross-layer equalization of conv->conv and depthwise->pointwise pairs (float-equivalent)
    ranges     activation range per tensor: min/max, percentile, or the MSE-optimal clip of the observed values
    adaround   layer-wise optimisation of up/down rounding on the exact int8 weight grid
    bias       empirical bias correction per output channel

The result (``QuantParams``: ranges and, per linear layer, the rounded kernel and corrected bias) is applied to a
``QATModel``; its fake-quant graph has fixed ranges and kernels already on the int8 grid, so TFLite (all-int8) and
OpenVINO (FakeQuantize) carry the same integers, and Core ML's 8-bit per-channel weights reproduce the same grid.
``optimize.quantize_params`` runs the chosen algorithms in order; AdaRound and bias correction read each layer's
input and output from passes that resume where the previous layer's stopped (``walk``).
"""
