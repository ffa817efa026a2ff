"""The tflite backend: converter (backend.py), post-training quantization (ptq.py)."""
