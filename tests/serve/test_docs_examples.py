"""Every curl example of docs/service.md, read from the markdown and run in order with the real curl against a
real service, as a new user would run them (photos named in the examples are shared photos copied under those
names; the large one is the 2.3 MB photo a command line cannot hold in base64)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.helpers import missing
from tests.helpers.photos import photo

from .conftest import Fresh

DOCS = Path(__file__).resolve().parents[2] / "docs" / "service.md"
PHOTOS = {"b.jpg": "img2.jpg", "ada2.jpg": "img2.jpg", "door-camera.jpg": "img3.jpg"}  # others: img1.jpg (2.3 MB)


def curl_examples(markdown: str) -> list[str]:
    """The commands of the ```bash blocks that run curl, continuation lines joined, in document order."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            if re.match(r"\s*(\(.*\)\s*\|\s*)?curl\b", command) or re.search(r"\|\s*curl\b", command):
                commands.append(command.strip())
    return commands


def test_the_examples_are_found() -> None:
    commands = curl_examples(DOCS.read_text())
    assert len(commands) >= 11
    assert any("base64" in c and "@-" in c for c in commands)  # the base64 example reads its body from stdin


def test_every_curl_example_runs(fresh: Fresh, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        missing("curl is not installed (apt-get install curl)")
    commands = curl_examples(DOCS.read_text())
    for command in commands:
        for name in re.findall(r"[@ ]([\w.-]+\.jpg)\b", command):
            if not (tmp_path / name).exists():
                shutil.copy(photo(PHOTOS.get(name, "img1.jpg")), tmp_path / name)
    env = {
        **os.environ,
        "KEY": fresh.admin,
        "URL": fresh.service.url,
        "AUTH": f"Authorization: Bearer {fresh.admin}",
    }
    for command in commands:
        # as written, but with curl failing on an HTTP error and saying why
        checked = re.sub(r"\bcurl -s\b", "curl -sS --fail-with-body", command)
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", checked],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[:500]}\n{result.stderr[:500]}"
        if result.stdout.strip():
            answer = json.loads(result.stdout)
            assert "code" not in answer or "status" not in answer, (command, answer)
