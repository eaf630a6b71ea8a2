"""Starts ``python -m client.web`` as a user does, on a free 127.0.0.1 port."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from launch import ServerFailed, free_port, stop, wait_ready

# The checkout these tests are in: the backend runs from its root, so it is this
# checkout's code (not whichever one the virtualenv installed) that is tested.
REPO = Path(__file__).resolve().parents[2]


@dataclass
class WebApp:
    """A running web backend."""

    proc: subprocess.Popen[bytes]
    http_url: str
    log_path: Path

    def log(self) -> str:
        """Its log so far."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (SIGKILL if it lingers); returns the exit code."""
        return stop(self.proc, timeout)


def start_web(inference_url: str, log_dir: Path, *args: str,
              timeout: float = 60.0) -> WebApp:
    """Runs ``python -m client.web --url inference_url --port <free> *args``.

    Returns once ``/healthz`` answers 200 (whatever the inference service's state).
    """
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"web-{port}.log"
    command = [sys.executable, "-m", "client.web", "--url", inference_url,
               "--port", str(port), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETECT_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**env, "PYTHONUNBUFFERED": "1"})
    app = WebApp(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_ready(proc, f"{app.http_url}/healthz", timeout, "client.web", app.log)
    except ServerFailed:
        app.stop()
        raise
    return app


def shapes_png(seed: int, objects: int = 3) -> bytes:
    """A 320 x 320 synthetic picture with ``objects`` shapes the demo detector knows."""
    from demo.synthetic import make_sample

    image, _, _ = make_sample(seed, min_objects=objects, max_objects=objects)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def wait_for(predicate: object, timeout: float, what: str,
             interval: float = 0.2) -> None:
    """Polls ``predicate()`` until true; AssertionError naming ``what`` after ``timeout``."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"{what}: not so after {timeout:.0f} s")


__all__: Sequence[str] = ["WebApp", "shapes_png", "start_web", "wait_for"]
