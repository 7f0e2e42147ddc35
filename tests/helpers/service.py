"""The service as a real process on a free port of 127.0.0.1, and API keys made with the real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    def family(self) -> list[int]:
        """The server's process and its children (uvicorn workers, decoding workers), recursively."""
        found, queue = [], [self.process.pid]
        while queue:
            pid = queue.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):  # children of every thread (workers start in threads)
                with contextlib.suppress(OSError):
                    queue += [int(c) for c in (task / "children").read_text().split()]
        return found

    def memory_mib(self) -> float:
        """Resident memory of the process family, MiB."""
        total = 0
        for pid in self.family():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        return total / 1024

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the family, with that of its ended children."""
        total = 0.0
        for pid in self.family():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
        return total

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


@contextlib.contextmanager
def serve_in_thread(app: Any, timeout: float = 300) -> Iterator[str]:
    """An ASGI app served by uvicorn in a thread of the test on a free port of 127.0.0.1; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.started, f"uvicorn did not start within {timeout} s"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
    assert not thread.is_alive()
