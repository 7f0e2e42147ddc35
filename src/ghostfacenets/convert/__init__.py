"""Converters from the official Keras files (and, later, to ONNX)."""
