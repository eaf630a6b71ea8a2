"""Model folders made by the tests, and the real server started on 127.0.0.1 as a user does."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from launch import ServerProcess, start
from launch import free_port as free_port  # re-exported for the tests

REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL_DIR = REPO / "predictor" / "demo" / "model"

# Small and quick on a CPU; random weights are fine for plumbing tests.
TEST_ARCH = "ssdlite320_mobilenet_v3_large"
TEST_LABELS = ["__background__", "circle", "square", "triangle", "star"]


def save_random_model(folder: Path, arch: str = TEST_ARCH, labels: Sequence[str] = TEST_LABELS,
                      seed: int = 0, fmt: str = "safetensors") -> Path:
    """Writes a random-weights detector in the model-folder layout the server loads."""
    import torch
    import torchvision

    from predictor.pipeline.loader import save_model_folder

    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None, weights_backbone=None,
                                         num_classes=len(labels))
    save_model_folder(folder, model.state_dict(), arch, labels, fmt=fmt)
    return folder


@dataclass
class Server:
    """A running ``python -m predictor``, as the tests see it."""

    process: ServerProcess
    model_name: str
    model_dir: Path | None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.process.proc

    @property
    def http_port(self) -> int:
        return self.process.http_port

    @property
    def grpc_port(self) -> int:
        return self.process.grpc_port

    @property
    def http_url(self) -> str:
        return self.process.url

    @property
    def grpc_url(self) -> str:
        return self.process.grpc_target

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (SIGKILL if it lingers); returns the exit code."""
        self.process.stop(timeout)
        return int(self.proc.returncode)


def start_server(log_dir: Path, model_dir: Path | None, *extra: str, model_name: str = "detector",
                 timeout: float = 180) -> Server:
    """Starts the real server on free 127.0.0.1 ports and waits until the model is ready.

    Raises ``ServerFailed`` (a RuntimeError) with the log's tail when it does not get ready.
    """
    args = [*extra, *(["--model_dir", str(model_dir)] if model_dir is not None else [])]
    process = start("predictor", args, log_dir, model_name=model_name, timeout=timeout)
    return Server(process, model_name, model_dir)
