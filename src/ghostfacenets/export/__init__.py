"""Exports of a GhostFaceNet for other runtimes: ONNX (float32, float16, int8)."""
