"""Quantization-aware fine-tuning for Keras 3 models (TFMOT's QAT needs Keras 2).

``graph``  reads a Functional/Sequential model into a plan: what each layer becomes in the int8 graph
           (conv/dense with its BatchNorm folded in, fused activations, same-scale ops, layers kept float).
``model``  the fake-quant forward pass over that plan: per-channel symmetric weights on the BN-folded kernel,
           activation ranges tracked by EMA, BN statistics synchronized across replicas until frozen.
``train``  the training loop under a tf.distribute strategy, with labels or by distillation from the float model.
``export`` the fine-tuned float model and its ranges (the artifacts are the backends': ``Backend.export_qat``).
"""
