"""Shared fixtures: model folders made here, and the real server started on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL_DIR = REPO / "predictor" / "demo_model"
SHARED_DIR = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))

# Small and quick on a CPU; random weights are fine for plumbing tests.
TEST_ARCH = "ssdlite320_mobilenet_v3_large"
TEST_LABELS = ["__background__", "circle", "square", "triangle", "star"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def save_random_model(folder: Path, arch: str = TEST_ARCH, labels: Sequence[str] = TEST_LABELS,
                      seed: int = 0, fmt: str = "safetensors") -> Path:
    """Writes a random-weights detector in the model-folder layout the server loads."""
    import torch
    import torchvision

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None, weights_backbone=None,
                                         num_classes=len(labels))
    if fmt == "safetensors":
        from safetensors.torch import save_file

        name = "model.safetensors"
        save_file(model.state_dict(), str(folder / name))
    elif fmt == "pt":
        name = "model.pt"
        torch.save(model.state_dict(), folder / name)
    else:
        raise ValueError(fmt)
    (folder / "config.json").write_text(json.dumps(
        {"architecture": arch, "num_classes": len(labels), "weights": name}))
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    return folder


@dataclass
class Server:
    """A running ``python -m predictor`` process."""

    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    model_name: str
    model_dir: Path | None
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


def start_server(log_dir: Path, model_dir: Path | None, *extra: str, model_name: str = "detector",
                 timeout: float = 180) -> Server:
    """Starts the real server on free 127.0.0.1 ports and waits until the model is ready."""
    import httpx

    http_port, grpc_port = free_port(), free_port()
    args = [sys.executable, "-m", "predictor", "--model_name", model_name,
            "--http_port", str(http_port), "--grpc_port", str(grpc_port), *extra]
    if model_dir is not None:
        args += ["--model_dir", str(model_dir)]
    log_path = log_dir / f"server-{http_port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Server(proc, http_port, grpc_port, model_name, model_dir, log_path, args)
    deadline = time.monotonic() + timeout
    url = f"{server.http_url}/v2/models/{model_name}/ready"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"server not ready after {timeout} s:\n{server.log()[-3000:]}")


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weights ssdlite320 with the demo's five classes, saved as safetensors."""
    return save_random_model(tmp_path_factory.mktemp("random-model"))


@pytest.fixture(scope="session")
def served_model(tmp_path_factory: pytest.TempPathFactory, random_model_dir: Path
                 ) -> Iterator[Server]:
    """The real server with random weights; session-wide, stopped at the end."""
    server = start_server(tmp_path_factory.mktemp("logs"), random_model_dir,
                          "--max_batch_size", "4")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real server with the embedded trained demo detector."""
    if not (DEMO_MODEL_DIR / "config.json").is_file():
        pytest.skip("the demo detector is not in predictor/demo_model yet")
    server = start_server(tmp_path_factory.mktemp("demo-logs"), DEMO_MODEL_DIR)
    yield server
    server.stop()
