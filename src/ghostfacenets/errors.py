"""Errors the package raises for bad user input; the CLI prints them as one line."""


class GhostFaceNetsError(Exception):
    """Base class: a problem with the user's input, files or environment, not a bug."""


class ConversionError(GhostFaceNetsError):
    """A Keras file that cannot be read as a GhostFaceNet."""


class ModelFileError(GhostFaceNetsError):
    """A model file or name that cannot be loaded."""


class DownloadError(GhostFaceNetsError):
    """Pretrained weights that could not be fetched or failed their checks."""
