"""The reference runner of the device pipeline files (``ghostfacenets export --pipeline``): what an app does, in
Python, with the runtimes apps use (LiteRT, ExecuTorch) and onnxruntime."""

from .runner import DeviceFile, MobileFace, MobilePipeline, nms, window

__all__ = ["DeviceFile", "MobileFace", "MobilePipeline", "nms", "window"]
