"""A database password never shows: not in answers (/readyz, 503s), not in the service's log, not in the process
list, not in the environment of the worker processes (``serve --workers 2 --db-file``, with ``PGPASSWORD`` set).
The session's PostgreSQL trusts local connections, so the passwords travel everywhere without being checked."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest

from tests.helpers.service import create_key, start_service

pytestmark = pytest.mark.slow  # two worker processes, each loading the model

MARKERS = ("Url-pw-marker", "Param-pw-marker", "Ssl-pw-marker", "Env-pw-marker")


def _descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _process_text(pid: int, what: str) -> str:
    return Path(f"/proc/{pid}/{what}").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def test_no_password_in_answers_logs_process_lists_or_worker_environments(
    model_file: Path, pg_server: str, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = urllib.parse.urlsplit(pg_url)
    secret_url = f"postgresql://postgres:Url-pw-marker@{parts.path}?{parts.query}&password=Param-pw-marker"
    secret_url += "&sslpassword=Ssl-pw-marker"
    db_file = tmp_path / "db"
    db_file.write_text(secret_url + "\n")
    db_file.chmod(0o600)
    key = str(create_key(secret_url, "admin")["key"])
    monkeypatch.setenv("PGPASSWORD", "Env-pw-marker")
    log = tmp_path / "serve.log"
    service = start_service(model_file, None, log, "--db-file", str(db_file), "--workers", "2", "--log-level", "info")
    try:
        workers = _descendants(service.process.pid)
        assert len([p for p in workers if "multiprocessing" in _process_text(p, "cmdline")]) >= 2, workers
        for pid in [service.process.pid, *workers]:
            assert not any(m in _process_text(pid, "cmdline") for m in MARKERS), pid  # what ps shows
        for pid in workers:  # what they inherit (the serving process's own start-up environment is the user's)
            assert not any(m in _process_text(pid, "environ") for m in MARKERS), pid
        with service.client(key) as http:
            assert http.post("/v1/galleries", json={"name": "g"}).status_code == 201
            database = parts.path.lstrip("/")
            import psycopg

            with psycopg.connect(pg_server, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
            answers = [http.get("/readyz"), http.get("/v1/galleries"), http.get("/v1/galleries/g")]
        assert [a.status_code for a in answers] == [503, 503, 503]
        for answer in answers:
            assert answer.json()["code"] == "UNAVAILABLE" and answer.headers["retry-after"]
            assert not any(m in answer.text for m in MARKERS) and "postgres" not in answer.text, answer.text
    finally:
        service.stop()
    text = log.read_text()
    assert "gallery postgresql://postgres:***@/" in text  # the start-up line names the database, redacted
    assert not any(m in text for m in MARKERS), [line for line in text.splitlines() if "marker" in line][:3]
    assert os.environ["PGPASSWORD"] == "Env-pw-marker"
