"""The openvino backend: converter (backend.py), post-training quantization (ptq.py)."""
