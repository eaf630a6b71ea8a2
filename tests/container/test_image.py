"""The image as shipped: non-root, read-only root, health check, demo weights by default."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from ._docker import Container, docker, pip_left_in
from ._wire import v1_predict

pytestmark = pytest.mark.container

DEMO_CLASSES = {"circle", "square", "triangle", "star"}


def test_image_declares_how_it_runs(detector_image: str) -> None:
    """Entrypoint, ports, user, stop signal and health check are what the docs promise."""
    config = json.loads(docker("image", "inspect", detector_image).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["python", "-m", "predictor"]
    assert set(config["ExposedPorts"]) == {"8080/tcp", "8081/tcp"}
    assert config["User"] == "1000:1000"
    assert config["StopSignal"] == "SIGTERM"
    assert "PYTHONUNBUFFERED=1" in config["Env"]
    assert "/v2/models/detector/ready" in " ".join(config["Env"] + config["Healthcheck"]["Test"])
    assert config["Labels"]["io.kserve-detector.source-hash"]


def test_runtime_stage_carries_no_build_tools(detector_image: str) -> None:
    """No project sources, no build CA bundle, no client/ and no pip anywhere in the image."""
    script = ("import importlib.util, os, sys; "
              "bad = [p for p in ('/tmp/build', '/tmp/src', '/tmp/tools') if os.path.exists(p)]; "
              "bad += [m for m in ('pip', 'client', 'nncf') if importlib.util.find_spec(m)]; "
              "bad += [n for n in os.listdir('/opt/app') if not n.startswith('predictor') "
              "and not n.endswith('.dist-info')]; "
              "print(bad); sys.exit(1 if bad else 0)")
    proc = docker("run", "--rm", "--entrypoint", "python", detector_image, "-c", script,
                  check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pip_left_in(detector_image) == []


def test_runs_as_uid_1000(demo_container: Container) -> None:
    """The server process is not root."""
    proc = demo_container.exec("id", "-u")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1000"
    # PID 1 is the server itself (exec-form entrypoint), so signals reach it.
    status = demo_container.exec("cat", "/proc/1/status").stdout
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["1000"] * 4
    cmdline = demo_container.exec("cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[:3] == ["python", "-m", "predictor"]


def test_serves_with_read_only_root(demo_container: Container) -> None:
    """With --read-only and a /tmp tmpfs it serves, and really cannot write elsewhere."""
    host_config = demo_container.inspect()["HostConfig"]
    assert host_config["ReadonlyRootfs"] is True
    assert demo_container.exec("test", "-d", "/home/app").returncode == 0
    assert demo_container.exec("touch", "/home/app/x").returncode != 0
    assert demo_container.exec("touch", "/tmp/x").returncode == 0
    health = httpx.get(f"{demo_container.http_url}/v2/health/live", timeout=5)
    assert health.status_code == 200


def test_serves_demo_detector_by_default(demo_container: Container, sample_png: bytes) -> None:
    """With nothing at /mnt/models the baked-in demo detector answers, with its classes."""
    dets = v1_predict(demo_container.http_url, "detector", sample_png)
    assert dets, "the demo detector found nothing in a picture with three shapes"
    assert {d.label for d in dets} <= DEMO_CLASSES
    body = {"instances": [{"b64": base64.b64encode(sample_png).decode()}],
            "parameters": {"classes": ["apple"]}}
    resp = httpx.post(f"{demo_container.http_url}/v1/models/detector:predict", json=body,
                      timeout=30)
    assert resp.status_code == 400
    assert "circle" in resp.json()["error"]


def test_health_check_turns_healthy(demo_container: Container) -> None:
    """Docker's HEALTHCHECK (python urllib on the V2 ready endpoint) passes."""
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        status = demo_container.inspect()["State"]["Health"]["Status"]
        if status == "healthy":
            break
        assert status != "unhealthy", demo_container.inspect()["State"]["Health"]
        time.sleep(2)
    assert status == "healthy"
