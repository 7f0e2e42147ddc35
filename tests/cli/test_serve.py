"""``ghostfacenets keys`` and ``ghostfacenets serve`` from the command line."""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import pytest

from ghostfacenets.cli import main
from tests.helpers import require_module


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_create_list_revoke(capsys, tmp_path) -> None:
    db = tmp_path / "g.sqlite"
    code, out, _ = run(capsys, "keys", "create", "--db", db, "--role", "admin", "--json")
    assert code == 0
    admin = json.loads(out)
    assert set(admin) == {"id", "key", "role", "gallery", "permissions"} and admin["role"] == "admin"
    assert admin["gallery"] is None and admin["permissions"] == []
    code, out, err = run(capsys, "keys", "create", "--db", db, "--role", "identify", "--gallery", "shop")
    assert code == 0
    secret = out.strip()
    assert len(secret) >= 32 and "shown only now" in err
    code, out, _ = run(capsys, "keys", "list", "--db", db, "--json")
    listed = json.loads(out)
    assert [(k["id"], k["role"], k["gallery"], k["revoked"]) for k in listed] == [
        (admin["id"], "admin", None, False),
        (admin["id"] + 1, "identify", "shop", False),
    ]
    assert secret not in out and admin["key"] not in out
    code, out, _ = run(capsys, "keys", "revoke", "--db", db, admin["id"])
    assert code == 0 and f"revoked key {admin['id']}" in out
    assert json.loads(run(capsys, "keys", "list", "--db", db, "--json")[1])[0]["revoked"] is True
    # only hashes of the secrets are stored
    raw = db.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("g.sqlite-*"))
    assert secret.encode() not in raw and admin["key"].encode() not in raw
    with sqlite3.connect(db) as connection:
        dump = "\n".join(connection.iterdump())
    assert secret not in dump and admin["key"] not in dump
    code, _, err = run(capsys, "keys", "revoke", "--db", db, 999)
    assert code == 2 and err.count("\n") == 1


def test_keys_with_permissions_written_to_a_private_file(capsys, tmp_path) -> None:
    db, out_file = tmp_path / "g.sqlite", tmp_path / "door.key"
    old = os.umask(0o022)
    try:
        code, out, err = run(capsys, "keys", "create", "--db", db, "--role", "identify", "--can",
                             "see-candidates,list-subjects", "--out", out_file)  # fmt: skip
    finally:
        os.umask(old)
    assert code == 0 and out == "" and f"written to {out_file}" in err
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600 and out_file.read_text().startswith("gfn_")
    listed = json.loads(run(capsys, "keys", "list", "--db", db, "--json")[1])
    assert listed[0]["permissions"] == ["list-subjects", "see-candidates"]
    assert "list-subjects,see-candidates" in run(capsys, "keys", "list", "--db", db)[1]
    code, _, err = run(capsys, "keys", "create", "--db", db, "--role", "admin", "--can", "list-subjects")
    assert code == 2 and "--can is for identify keys" in err
    with pytest.raises(SystemExit):
        main(["keys", "create", "--db", str(db), "--role", "identify", "--can", "see-all"])
    assert "unknown permission(s) see-all" in capsys.readouterr().err


def test_keys_refuse_bad_input(capsys, tmp_path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["keys", "create", "--db", str(tmp_path / "g.sqlite"), "--role", "root"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    code, _, err = run(capsys, "keys", "create", "--db", tmp_path / "g.sqlite", "--role", "admin", "--gallery", "../x")
    assert code == 2 and err.startswith("ghostfacenets keys: error:") and err.count("\n") == 1


def test_serve_fails_with_one_line(capsys, tmp_path) -> None:
    require_module("fastapi", "serve")
    code, _, err = run(capsys, "serve", "--model", tmp_path / "missing.safetensors", "--db", tmp_path / "g.sqlite")
    assert code == 2 and err.startswith("ghostfacenets serve: error:") and err.count("\n") == 1
    code, _, err = run(capsys, "serve", "--db", tmp_path / "no" / "such" / "folder.sqlite")
    assert code == 2 and err.count("\n") == 1
    code, _, err = run(capsys, "serve", "--workers", "0")
    assert code == 2 and "--workers" in err
