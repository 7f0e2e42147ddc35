"""``create_app`` as other ASGI servers use it (here uvicorn in a thread of the test), and the settings' checks."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers.service import create_key, serve_in_thread


def test_create_app_under_another_server(model_file, tmp_path) -> None:
    from ghostfacenets.serve import create_app

    db = tmp_path / "g.sqlite"
    key = create_key(db, "identify")["key"]
    app = create_app(model=str(model_file), db=str(db), threshold=0.5, max_images=2, queue_faces=32)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        info = http.get("/v1/info").json()
        assert info["threshold"] == {"value": 0.5, "source": "user", "note": "given by the user"}
        assert info["limits"]["max_images"] == 2


def test_settings_are_checked() -> None:
    from ghostfacenets.errors import GhostFaceNetsError
    from ghostfacenets.serve import ServiceSettings

    settings = ServiceSettings(model="m.safetensors", store_crops=True, image_formats=("JPEG", "PNG"))
    assert ServiceSettings.from_json(settings.to_json()) == settings
    with pytest.raises(GhostFaceNetsError, match="queue_faces"):
        ServiceSettings(queue_faces=4)
    with pytest.raises(GhostFaceNetsError, match="max_pixels"):
        ServiceSettings(max_pixels=0)
    with pytest.raises(GhostFaceNetsError, match="GIF"):
        ServiceSettings(image_formats=("GIF",))
    with pytest.raises(GhostFaceNetsError, match="unknown service settings: colour"):
        settings.with_changes(colour="blue")


def test_the_cli_defaults_are_the_services() -> None:
    """The CLI repeats the service's defaults so that its start-up imports neither FastAPI nor torch."""
    from ghostfacenets.cli import serve as serve_cli
    from ghostfacenets.serve.settings import DEFAULT_DB, ServiceSettings

    assert serve_cli._DEFAULT_DB == DEFAULT_DB == ServiceSettings().db
    assert ServiceSettings().model == serve_cli._DEFAULT_MODEL
