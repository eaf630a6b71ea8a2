"""A weights folder mounted at /mnt/models replaces the demo; SIGTERM drains, then exits 0.

The SIGTERM test stops the module's container, so it stays the last test of this file.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ._docker import HARDENED, Container, docker, mount_model, running
from ._wire import v1_predict

pytestmark = pytest.mark.container

ARCH = "ssdlite320_mobilenet_v3_large"
FRUIT = ["__background__", "apple", "pear"]


@pytest.fixture(scope="module")
def fruit_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weights ssdlite320 with 3 classes (not the demo's 5), in the folder layout."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("fruit-model")
    torch.manual_seed(3)
    model = torchvision.models.get_model(ARCH, weights=None, weights_backbone=None,
                                         num_classes=len(FRUIT))
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(
        {"architecture": ARCH, "num_classes": len(FRUIT), "weights": "model.safetensors"}))
    (folder / "labels.txt").write_text("\n".join(FRUIT) + "\n")
    return folder


@pytest.fixture(scope="module")
def fruit_container(detector_image: str, fruit_model_dir: Path) -> Iterator[Container]:
    """The image, default command, the fruit folder mounted read-only at /mnt/models."""
    yield from running(detector_image, docker_args=(*HARDENED, *mount_model(fruit_model_dir)))


def test_mounted_folder_replaces_the_demo(fruit_container: Container, sample_png: bytes) -> None:
    """Labels come from the mounted labels.txt, and the demo's classes are unknown."""
    dets = v1_predict(fruit_container.http_url, "detector", sample_png,
                      {"score_threshold": 0.05, "max_detections": 10})
    assert dets, "random weights at threshold 0.05 should return boxes"
    assert {d.label for d in dets} <= {"apple", "pear"}
    assert {d.label_id for d in dets} <= {1, 2}

    body = {"instances": [{"b64": base64.b64encode(sample_png).decode()}],
            "parameters": {"classes": ["circle"]}}
    resp = httpx.post(f"{fruit_container.http_url}/v1/models/detector:predict", json=body,
                      timeout=30)
    assert resp.status_code == 400
    assert "apple" in resp.json()["error"]
    meta = httpx.get(f"{fruit_container.http_url}/v2/models/detector", timeout=10)
    assert meta.status_code == 200
    assert meta.json()["name"] == "detector"


def _many_images(count: int) -> list[dict[str, Any]]:
    """``count`` V1 instances (8 distinct 640 px pictures, repeated): seconds of work."""
    from demo.synthetic import make_sample

    distinct = []
    for seed in range(8):
        image, _, _ = make_sample(seed, size=640)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        distinct.append({"b64": base64.b64encode(buf.getvalue()).decode()})
    return [distinct[i % len(distinct)] for i in range(count)]


def _images_taken(http_url: str) -> float:
    """Images the server has queued or run so far (from its /metrics)."""
    text = httpx.get(f"{http_url}/metrics", timeout=5).text
    values = re.findall(r"^(?:detector_queue_depth|detector_images_total) (\S+)$", text,
                        re.MULTILINE)
    return sum(float(v) for v in values)


def test_sigterm_finishes_in_flight_request_then_exits_0(fruit_container: Container) -> None:
    """`docker stop -t 30` during a slow request: the request gets its 200, exit code 0."""
    instances = _many_images(64)  # the default --max_images_per_request
    result: dict[str, Any] = {}

    def send() -> None:
        try:
            resp = httpx.post(f"{fruit_container.http_url}/v1/models/detector:predict",
                              json={"instances": instances}, timeout=60)
            result["status"] = resp.status_code
            result["count"] = len(resp.json().get("predictions", []))
        except (httpx.HTTPError, ValueError) as exc:
            result["error"] = repr(exc)
        result["done_at"] = time.monotonic()

    before = _images_taken(fruit_container.http_url)
    sender = threading.Thread(target=send)
    sender.start()
    # SIGTERM once the server has the request: its images are queued or running.
    deadline = time.monotonic() + 60
    while _images_taken(fruit_container.http_url) <= before:
        assert time.monotonic() < deadline, "the request never reached the model"
        time.sleep(0.05)
    assert "done_at" not in result, "the request finished before SIGTERM; make it bigger"
    stop_at = time.monotonic()
    docker("stop", "-t", "30", fruit_container.name, timeout=60)
    stop_s = time.monotonic() - stop_at
    sender.join(60)

    assert result.get("status") == 200, (result, fruit_container.logs())
    assert result["count"] == len(instances)
    assert result["done_at"] > stop_at
    state = fruit_container.inspect()["State"]
    assert state["ExitCode"] == 0, (state, fruit_container.logs())
    assert stop_s < 30, f"docker stop took {stop_s:.1f}s: killed at the deadline, not drained"
