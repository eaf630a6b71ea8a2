"""Local server processes on 127.0.0.1: start one, wait until it is ready, stop it.

Neutral ground for the tools and the tests: the benchmark (``bench/``) starts its servers
with it, and ``tests/support`` the real server, the web backend and Prometheus. It
imports neither the runtime nor the client, so any of them may use it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # launch/ sits at the repository's top


class ServerFailed(RuntimeError):
    """A server exited or did not get ready; the message ends with its log's tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A running model server."""

    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log_path: Path

    @property
    def url(self) -> str:
        """REST base URL."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        """gRPC ``host:port``."""
        return f"127.0.0.1:{self.grpc_port}"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it does not leave in time."""
        stop(self.proc, timeout)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL if ``proc`` does not leave in ``timeout`` s; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return int(proc.returncode)


def start(module: str, args: Sequence[str], log_dir: Path, *, model_name: str = "detector",
          env: Mapping[str, str] | None = None, timeout: float = 300.0) -> ServerProcess:
    """Runs ``python -m module --model_name ... --http_port ... --grpc_port ... *args``.

    Returns once ``/v2/models/{model_name}/ready`` answers 200; raises ServerFailed with
    the log's tail when the process exits or does not get ready in
    ``timeout`` seconds.
    """
    http_port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", module, "--model_name", model_name,
               "--http_port", str(http_port), "--grpc_port", str(grpc_port), *args]
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{module.rsplit('.', 1)[-1]}-{http_port}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env=full_env)
    server = ServerProcess(proc, http_port, grpc_port, log_path)
    try:
        wait_ready(proc, f"{server.url}/v2/models/{model_name}/ready", timeout, module,
                   server.log_tail, interval=0.3)
    except ServerFailed:
        server.stop()
        raise
    return server


def wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float, name: str,
               log_tail: Callable[[], str], interval: float = 0.2) -> None:
    """Polls ``url`` until it answers 200.

    Raises ServerFailed, with ``log_tail()``, when ``proc`` exits first or ``timeout``
    seconds pass (the caller stops the process).
    """
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"{name} exited with {proc.returncode}:\n{log_tail()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise ServerFailed(f"{name} not ready at {url} after {timeout:.0f} s:\n{log_tail()}")
