"""Opening a store from --db and showing it: every secret form of a libpq connection string redacted in messages and
logs, key=value strings and services accepted, --db-file and GHOSTFACENETS_DB, and the settings handed to service
workers without the password."""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
from pathlib import Path

import pytest

from ghostfacenets.cli import main
from ghostfacenets.gallery import GalleryError, is_postgres_url, open_store
from ghostfacenets.gallery.stores import hide_in_logs, read_db_file, redact_url, scrub, secrets_in
from tests.helpers import require_module

SECRETS = ("S3cret-pw", "Url-param-pw", "Ssl-key-pw", "Oauth-secret", "Dsn pw 'quoted'")


@pytest.mark.parametrize(
    "db",
    [
        "postgresql://gfn:S3cret-pw@db.internal:5432/faces?sslmode=require&password=Url-param-pw"
        "&sslpassword=Ssl-key-pw&oauth_client_secret=Oauth-secret",
        "postgres://gfn:S3cret%2Dpw@/faces?host=/run/postgresql&sslpassword=Ssl-key-pw",
        "host=db.internal dbname=faces user=gfn password=S3cret-pw sslpassword = 'Ssl-key-pw' "
        "oauth_client_secret=Oauth-secret",
        r"host=/tmp dbname=faces password='Dsn pw \'quoted\'' user=gfn",
    ],
)
def test_every_secret_of_a_connection_string_is_redacted(db: str) -> None:
    assert is_postgres_url(db)
    shown = redact_url(db)
    assert "***" in shown and "faces" in shown and "gfn" in shown  # still says which database
    for secret in (*SECRETS, "S3cret%2Dpw", "Dsn pw"):
        assert secret not in shown, shown
    # a driver message quoting a secret, or the whole string, is scrubbed too
    for message in (f"could not connect to {db}", f'invalid percent-encoded token: "{secrets_in(db)[0]}"'):
        scrubbed = scrub(message, db)
        assert not any(secret in scrubbed for secret in secrets_in(db)), scrubbed


def test_what_is_not_secret_stays() -> None:
    assert redact_url("gallery.sqlite") == "gallery.sqlite" and not is_postgres_url("gallery.sqlite")
    assert redact_url("postgresql://gfn@db/faces?sslkey=/etc/k.pem") == "postgresql://gfn@db/faces?sslkey=/etc/k.pem"
    assert redact_url("service=faces") == "service=faces" and is_postgres_url("service=faces")
    assert not is_postgres_url("faces=1.sqlite") and secrets_in("gallery.sqlite") == []


def test_driver_log_lines_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    db = "postgresql://gfn:S3cret-pw@db/faces"
    hide_in_logs(db)
    with caplog.at_level(logging.WARNING, logger="psycopg.pool"):
        logging.getLogger("psycopg.pool").warning("error connecting in %r: %s", "pool-1", f"{db} refused S3cret-pw")
    assert "S3cret-pw" not in caplog.text and "gfn:***@db/faces" in caplog.text


def test_an_unreachable_database_error_names_no_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_module("psycopg", "postgres")
    db = f"postgresql://gfn:S3cret-pw@/faces?host={tmp_path}&password=Url-param-pw&sslpassword=Ssl-key-pw"
    assert main(["gallery", "--db", db, "list"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ghostfacenets gallery: error: postgresql://gfn:***@/faces") and error.count("\n") == 1
    assert not any(secret in error for secret in SECRETS), error
    with pytest.raises(GalleryError) as caught:
        open_store(f"host={tmp_path} dbname=faces password=S3cret-pw")
    assert "S3cret-pw" not in str(caught.value) and "password=***" in str(caught.value)


def test_key_value_strings_and_services_open_postgres(pg_url: str, tmp_path: Path, monkeypatch) -> None:
    parts = urllib.parse.urlsplit(pg_url)
    host = dict(urllib.parse.parse_qsl(parts.query))["host"]
    dsn = f"host={host} dbname={parts.path.lstrip('/')} user=postgres ef_search=55"
    with open_store(dsn) as store:
        assert store.options["ef_search"] == 55  # type: ignore[attr-defined]
        store.create_gallery("by-dsn")
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[faces]\nhost={host}\ndbname={parts.path.lstrip('/')}\nuser=postgres\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    for db in ("service=faces", "postgresql:///?service=faces"):
        with open_store(db) as store:
            assert [g.name for g in store.galleries()] == ["by-dsn"]


def test_db_file_and_environment(tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "g.sqlite"
    file = tmp_path / "db.txt"
    file.write_text(f"{db}\n")
    assert read_db_file(file) == str(db)
    assert main(["keys", "create", "--db-file", str(file), "--role", "admin", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["role"] == "admin"
    monkeypatch.setenv("GHOSTFACENETS_DB", str(db))
    assert main(["keys", "list", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    monkeypatch.delenv("GHOSTFACENETS_DB")
    assert main(["audit"]) == 2 and "--db-file FILE or $GHOSTFACENETS_DB" in capsys.readouterr().err
    secret = tmp_path / "pg.txt"
    secret.write_text("postgresql://gfn:S3cret-pw@db/faces\n")
    secret.chmod(0o644)
    with pytest.raises(GalleryError, match="others may read it; chmod 600"):
        read_db_file(secret)
    secret.chmod(0o600)
    assert read_db_file(secret) == "postgresql://gfn:S3cret-pw@db/faces"


def test_workers_get_the_database_without_its_password(tmp_path: Path, monkeypatch) -> None:
    require_module("psycopg", "postgres")
    from ghostfacenets.serve.settings import ServiceSettings, worker_settings

    monkeypatch.setenv("PGPASSWORD", "Env-pw")
    monkeypatch.setenv("GHOSTFACENETS_DB", "postgresql://gfn:S3cret-pw@db/faces")
    settings = ServiceSettings(db="postgresql://gfn@db/faces?ef_search=40")
    with worker_settings(settings) as handed:
        text = handed.to_json()
        assert "Env-pw" not in text and "S3cret" not in text and "PGPASSWORD" not in os.environ
        assert "GHOSTFACENETS_DB" not in os.environ
        file = Path(handed.db_file or "")
        assert oct(file.stat().st_mode & 0o777) == "0o600" and oct(file.parent.stat().st_mode & 0o777) == "0o700"
        database = ServiceSettings.from_json(text).database()  # what a worker opens
        assert "password=Env-pw" in database and "ef_search=40" in database and is_postgres_url(database)
    assert not file.exists() and os.environ["PGPASSWORD"] == "Env-pw"
    with worker_settings(ServiceSettings(db=str(tmp_path / "g.sqlite"))) as handed:  # nothing secret: as it is
        assert handed.db == str(tmp_path / "g.sqlite") and handed.db_file is None
