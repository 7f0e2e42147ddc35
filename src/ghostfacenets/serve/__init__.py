"""The face recognition service: an HTTP API (FastAPI), API keys and a web page over the same pipeline as the
library and the CLI. ``ghostfacenets serve`` runs it; :func:`create_app` gives the ASGI app for tests and for
other ASGI servers (``uvicorn --factory ghostfacenets.serve:create_app``)."""

from .app import create_app
from .settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]
