"""The coreml backend: converter (backend.py), post-training quantization (ptq.py)."""
