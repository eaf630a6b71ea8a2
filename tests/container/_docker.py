"""Docker helpers for the container tests: engine, image build, one running container.

Everything goes through the ``docker`` command line, the way a user runs the image, and
every port is published on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "scripts"
DEMO_MODEL_DIR = REPO_ROOT / "predictor" / "demo" / "model"
HOW_TO_RUN = ("run `make test-container` on a machine with a Docker engine (or as root "
              "with apt-get, where scripts/docker-engine.sh installs and starts one)")
# An uncached build downloads torch (several GB) and copies it into the runtime stage.
BUILD_TIMEOUT_S = float(os.environ.get("CONTAINER_BUILD_TIMEOUT_S", "1500"))
READY_TIMEOUT_S = float(os.environ.get("CONTAINER_READY_TIMEOUT_S", "180"))
# Read-only root with a writable /tmp: how the Kubernetes manifests run it.
HARDENED = ("--read-only", "--tmpfs", "/tmp:rw,size=256m")


class DockerUnavailable(RuntimeError):
    """No Docker engine answers and none could be started here."""


def docker(*args: str, timeout: float = 120,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs ``docker ARGS`` and returns the finished process (text output)."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} exited {proc.returncode}:\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def pip_left_in(image: str) -> list[str]:
    """Every pip anywhere in the image: packages, commands, the wheels ensurepip installs.

    Run with ``find`` over the whole root filesystem, not only the venv's interpreter: the
    base image's Python has a pip of its own.
    """
    find = ("find / -xdev \\( -name pip -o -name 'pip[0-9]*' -o -name 'pip-*' \\) "
            "-not -path '/proc/*' 2>/dev/null; true")
    proc = docker("run", "--rm", "--user", "0", "--entrypoint", "sh", image, "-c", find,
                  timeout=300)
    return proc.stdout.split()


def ensure_engine() -> None:
    """Starts (installing if needed) a Docker engine, or raises DockerUnavailable."""
    try:
        proc = subprocess.run(["bash", str(SCRIPTS / "docker-engine.sh")], capture_output=True,
                              text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DockerUnavailable(f"scripts/docker-engine.sh failed: {exc}") from exc
    if proc.returncode != 0:
        raise DockerUnavailable(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                                else f"scripts/docker-engine.sh exited {proc.returncode}")


def build_image(target: str = "", image: str = "kserve-detector") -> str:
    """Builds an image with scripts/image.sh (a no-op when the sources are unchanged).

    Args:
        target: The Dockerfile stage: empty for the predictor, ``web`` for the web backend.
        image: The repository name to tag.
    """
    env = {**os.environ, "TARGET": target, "IMAGE": image}
    proc = subprocess.run(["bash", str(SCRIPTS / "image.sh")], capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S, check=False, cwd=REPO_ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/image.sh exited {proc.returncode}:\n{proc.stderr[-6000:]}")
    return proc.stdout.strip().splitlines()[-1]


class Container:
    """One detached container of the image with its ports published on 127.0.0.1.

    Args:
        image: Image reference.
        args: Arguments after the entrypoint (replace the image's CMD when given).
        docker_args: Extra ``docker run`` options (mounts, ``--read-only``...).
        ports: Container ports to publish: the HTTP port first, then gRPC's if any.
    """

    def __init__(self, image: str, args: Sequence[str] = (),
                 docker_args: Sequence[str] = (), ports: Sequence[int] = (8080, 8081)) -> None:
        self.image = image
        self.name = f"kserve-detector-test-{uuid.uuid4().hex[:10]}"
        self._args = list(args)
        self._docker_args = list(docker_args)
        self._ports = list(ports)
        self.http_url = ""
        self.grpc_url = ""
        self.ready_s = 0.0

    def start(self) -> Container:
        """Runs the container detached; ports are chosen by Docker on 127.0.0.1."""
        published = [arg for port in self._ports for arg in ("-p", f"127.0.0.1::{port}")]
        docker("run", "-d", "--name", self.name, *published,
               *self._docker_args, self.image, *self._args, timeout=60)
        self.http_url = f"http://{self._host_port(self._ports[0])}"
        if len(self._ports) > 1:
            self.grpc_url = self._host_port(self._ports[1])
        return self

    def _host_port(self, port: int) -> str:
        out = docker("port", self.name, f"{port}/tcp").stdout.split()
        # `docker port` may list an IPv6 line too; the 127.0.0.1 one is ours.
        return next(line for line in out if line.startswith("127.0.0.1:"))

    def inspect(self) -> dict[str, Any]:
        """``docker inspect`` of the container."""
        return json.loads(docker("inspect", self.name).stdout)[0]  # type: ignore[no-any-return]

    def logs(self) -> str:
        """Its stdout and stderr so far (for failure messages)."""
        proc = docker("logs", "--tail", "80", self.name, check=False)
        return proc.stdout + proc.stderr

    def wait_ready(self, model_name: str = "detector",
                   timeout_s: float = READY_TIMEOUT_S, path: str | None = None) -> float:
        """Polls ``path`` (default: the V2 ready endpoint) until it answers 200; returns
        seconds waited. Fails fast if the container exits."""
        start = time.monotonic()
        url = f"{self.http_url}{path or f'/v2/models/{model_name}/ready'}"
        while time.monotonic() - start < timeout_s:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            state = self.inspect()["State"]
            if not state["Running"]:
                raise RuntimeError(f"container exited ({state['ExitCode']}) before ready:\n"
                                   f"{self.logs()}")
            time.sleep(0.5)
        raise TimeoutError(f"not ready after {timeout_s:.0f}s:\n{self.logs()}")

    def exec(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        """``docker exec`` in the running container (as its own user)."""
        return docker("exec", self.name, *cmd, check=False)

    def remove(self) -> None:
        """Kills and removes it; safe to call twice."""
        docker("rm", "-f", "-v", self.name, check=False, timeout=60)


def mount_model(folder: Path) -> tuple[str, ...]:
    """``docker run`` options mounting ``folder`` read-only at /mnt/models (uid 1000 reads)."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)
    return ("-v", f"{folder}:/mnt/models:ro")


def running(image: str, *, args: Sequence[str] = (), docker_args: Sequence[str] = (),
            model_name: str = "detector") -> Iterator[Container]:
    """Starts a container, waits until ready, yields it, and always removes it."""
    container = Container(image, args, docker_args)
    try:
        container.start()
        container.ready_s = container.wait_ready(model_name)
        yield container
    finally:
        container.remove()
