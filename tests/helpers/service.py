"""The service as a real process on a free port of 127.0.0.1, and API keys made with the real CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ghostfacenets ARGS`` in a new process."""
    result = subprocess.run(
        [sys.executable, "-m", "ghostfacenets.cli", *args], capture_output=True, text=True, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"ghostfacenets {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def create_key(db: str | Path, role: str, gallery: str | None = None) -> dict[str, object]:
    """A new API key (``keys create --json``: id, key, role, gallery)."""
    extra = ["--gallery", gallery] if gallery else []
    return json.loads(cli("keys", "create", "--db", str(db), "--role", role, *extra, "--json").stdout)


@dataclass
class RunningService:
    """A ``ghostfacenets serve`` process and its base URL; ``log`` holds its output."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def client(self, key: str | None = None, timeout: float = 120.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def start_service(
    model: str | Path, db: str | Path | None, log: Path, *options: str, timeout: float = 180
) -> RunningService:
    """``ghostfacenets serve`` on a free port, once ``/readyz`` answers 200."""
    port = free_port()
    command = [sys.executable, "-m", "ghostfacenets.cli", "serve", "--model", str(model)]
    command += ["--db", str(db)] if db is not None else []  # None: the options name it (--db-file)
    command += ["--port", str(port), *(options if "--log-level" in options else ("--log-level", "warning", *options))]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    service = RunningService(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise AssertionError(f"the service exited ({process.returncode}): {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200:
                return service
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    service.stop()
    raise AssertionError(f"the service was not ready within {timeout} s: {log.read_text()[-3000:]}")
