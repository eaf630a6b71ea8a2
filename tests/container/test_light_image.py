"""The light image (Dockerfile target light): compiled models on the CPU with no torch.

Issue 27's goals for a pod that scales out: no torch, torchvision, nvidia-* or triton in
the image, at most 800 MB, ready within 2 s of ``docker run``, every protocol served.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from client import DetectionClient

from ._docker import HARDENED, Container, build_image, docker, mount_model, pip_left_in, running

pytestmark = pytest.mark.container

MAX_IMAGE_MB = 800
MAX_READY_S = 2.0
DEMO_CLASSES = {"circle", "square", "triangle", "star"}


@pytest.fixture(scope="module")
def light_image(docker_engine: None) -> str:
    return build_image("light", image="kserve-detector-light")


@pytest.fixture(scope="module")
def light(light_image: str) -> Iterator[Container]:
    yield from running(light_image, docker_args=HARDENED)


def test_it_holds_no_torch_no_cuda_no_triton_and_no_pip(light_image: str) -> None:
    script = ("import importlib.util as u, sys; "
              "bad = [m for m in ('torch', 'torchvision', 'triton', 'nvidia', 'client', "
              "'pip', 'nncf') if u.find_spec(m)]; print(bad); sys.exit(1 if bad else 0)")
    proc = docker("run", "--rm", "--entrypoint", "python", light_image, "-c", script,
                  check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pip_left_in(light_image) == []
    config = json.loads(docker("image", "inspect", light_image).stdout)[0]
    assert config["Config"]["Labels"]["io.kserve-detector.variant"] == "light"
    assert config["Config"]["User"] == "1000:1000"
    assert config["Size"] / 1e6 <= MAX_IMAGE_MB, f"{config['Size'] / 1e6:.0f} MB"


def test_it_is_ready_within_two_seconds_of_docker_run(light_image: str) -> None:
    # The first start on a machine may pay for page-cache misses: time the second.
    times = []
    for _ in range(2):
        container = Container(light_image, docker_args=HARDENED)
        try:
            container.start()
            times.append(container.wait_ready())
        finally:
            container.remove()
    assert times[-1] <= MAX_READY_S, times


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc"])
def test_the_compiled_demo_answers_every_protocol(
        light: Container, protocol: str, sample_png: bytes) -> None:
    with DetectionClient(light.http_url, protocol=protocol,  # type: ignore[arg-type]
                         grpc_url=light.grpc_url) as client:
        result = client.detect_one(sample_png, score_threshold=0.3)
    assert result.detections
    assert {d.label for d in result.detections} <= DEMO_CLASSES
    meta = httpx.get(f"{light.http_url}/v2/models/detector", timeout=10).json()
    assert meta["platform"].startswith("openvino-")


def test_a_torchvision_model_folder_is_refused_with_what_to_use(
        light_image: str, random_model_dir: Path) -> None:
    container = Container(light_image, docker_args=(*HARDENED, *mount_model(random_model_dir)),
                          args=("--model_dir", "/mnt/models"))
    try:
        container.start()
        for _ in range(60):
            state = container.inspect()["State"]
            if not state["Running"]:
                break
            time.sleep(0.5)
        logs = container.logs()
    finally:
        container.remove()
    assert state["ExitCode"] != 0, logs
    assert "Traceback" not in logs, logs
    assert "compiled" in logs or "torch" in logs, logs
