"""The web backend's image (``docker build --target web``): light, hardened, and serving
detections from the predictor's image over a Docker network, as in a cluster."""

from __future__ import annotations

import contextlib
import io
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from client import DetectionClient

from ._docker import HARDENED, Container, build_image, docker, pip_left_in, running

pytestmark = pytest.mark.container

# Read-only root without even a /tmp: uploads are parsed in memory.
WEB_HARDENED = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")
WEB_IMAGE_MAX_MB = 600


@pytest.fixture(scope="session")
def web_image(docker_engine: None) -> str:
    """The web target for the current sources (built now unless cached)."""
    return build_image(target="web", image="kserve-detector-web")


@contextlib.contextmanager
def run_web(image: str, *args: str, docker_args: tuple[str, ...] = ()) -> Iterator[Container]:
    """A hardened web container, ready (``/healthz`` answers); always removed."""
    container = Container(image, args, (*WEB_HARDENED, *docker_args), ports=(8000,))
    try:
        container.start()
        container.ready_s = container.wait_ready(path="/healthz", timeout_s=60)
        yield container
    finally:
        container.remove()


@pytest.fixture(scope="module")
def lone_web(web_image: str) -> Iterator[Container]:
    """The web image pointed at an address where no inference service listens."""
    with run_web(web_image, docker_args=("-e", "DETECT_CLIENT_URL=http://127.0.0.1:9")) as web:
        yield web


@pytest.fixture(scope="module")
def network(docker_engine: None) -> Iterator[str]:
    name = f"kserve-detector-test-{uuid.uuid4().hex[:8]}"
    docker("network", "create", name)
    try:
        yield name
    finally:
        docker("network", "rm", name, check=False)


@pytest.fixture(scope="module")
def detector_on_network(detector_image: str, network: str) -> Iterator[Container]:
    """The predictor image (demo weights), reachable as http://detector:8080 on the network."""
    yield from running(detector_image, docker_args=(*HARDENED, "--network", network,
                                                    "--network-alias", "detector"))


def big_shapes_png() -> bytes:
    """A picture of shapes the demo knows, over 1 MiB as PNG (more than an in-memory
    spool would keep by default: it proves uploads never touch the read-only disk)."""
    from demo.synthetic import make_sample

    image, _, _ = make_sample(7, size=(1280, 1280), min_objects=3, max_objects=3)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=0)
    assert len(buf.getvalue()) > 1024 * 1024
    return buf.getvalue()


def test_web_image_declares_how_it_runs(web_image: str) -> None:
    config = json.loads(docker("image", "inspect", web_image).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["python", "-m", "client.web"]
    assert set(config["ExposedPorts"]) == {"8000/tcp"}
    assert config["User"] == "1000:1000"
    assert config["StopSignal"] == "SIGTERM"
    assert "/healthz" in " ".join(config["Env"] + config["Healthcheck"]["Test"])
    assert config["Labels"]["io.kserve-detector.source-hash"]


def test_web_image_holds_the_client_only(web_image: str) -> None:
    """No torch, torchvision, kserve, predictor or pip; and it stays small."""
    script = ("import importlib.util as u, sys; "
              "bad = [m for m in ('torch', 'torchvision', 'kserve', 'predictor', 'pip') "
              "if u.find_spec(m)]; import client.web.app; print(bad); sys.exit(1 if bad else 0)")
    proc = docker("run", "--rm", "--entrypoint", "python", web_image, "-c", script, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pip_left_in(web_image) == []
    size_mb = int(docker("image", "inspect", "-f", "{{.Size}}", web_image).stdout) / 1e6
    print(f"\n[web image] {web_image}: {size_mb:.0f} MB")
    assert size_mb < WEB_IMAGE_MAX_MB


def test_runs_as_uid_1000_with_a_read_only_root(lone_web: Container) -> None:
    assert lone_web.inspect()["HostConfig"]["ReadonlyRootfs"] is True
    assert lone_web.exec("id", "-u").stdout.strip() == "1000"
    cmdline = lone_web.exec("cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[:3] == ["python", "-m", "client.web"]
    assert lone_web.exec("test", "-d", "/home/app").returncode == 0
    assert lone_web.exec("touch", "/home/app/x").returncode != 0
    assert lone_web.exec("touch", "/tmp/x").returncode != 0


def test_without_a_service_it_stays_healthy_and_answers_503(lone_web: Container) -> None:
    health = httpx.get(f"{lone_web.http_url}/healthz", timeout=5)
    assert health.status_code == 200
    r = httpx.post(f"{lone_web.http_url}/api/detect", timeout=60,
                   files=[("file", ("a.png", big_shapes_png(), "image/png"))])
    assert r.status_code == 503
    assert r.json()["error"].startswith("the inference service cannot be reached")
    state = httpx.get(f"{lone_web.http_url}/healthz", timeout=5).json()["inference_service"]
    assert state["state"] == "unreachable"
    # Docker's own health check says healthy: the app's liveness is not the service's.
    deadline = time.monotonic() + 60
    while lone_web.inspect()["State"]["Health"]["Status"] != "healthy":
        assert time.monotonic() < deadline, lone_web.inspect()["State"]["Health"]
        time.sleep(1)


@pytest.mark.parametrize("protocol", ["v2", "grpc"])
def test_in_front_of_the_detector_container(web_image: str, network: str, protocol: str,
                                            detector_on_network: Container) -> None:
    """Same answers through the web container as from the detector container directly."""
    picture = big_shapes_png()
    with run_web(web_image, "--url", "http://detector:8080", "--protocol", protocol,
                 docker_args=("--network", network)) as web:
        r = httpx.post(f"{web.http_url}/api/detect", data={"score_threshold": "0.3"},
                       files=[("file", ("big.png", picture, "image/png"))], timeout=120)
        assert r.status_code == 200, r.text
        state = httpx.get(f"{web.http_url}/healthz", timeout=5).json()["inference_service"]
        assert state["state"] == "ready"
    (result,) = r.json()["results"]
    with DetectionClient(detector_on_network.http_url, timeout=120) as client:
        expected = client.detect_one(picture, score_threshold=0.3)
    assert expected.detections, "the demo detector found nothing in three shapes"
    assert result["image_size"] == list(expected.image_size) == [1280, 1280]
    assert [d["label"] for d in result["detections"]] == [d.label for d in expected.detections]
    for got, want in zip(result["detections"], expected.detections, strict=True):
        assert got["box"] == pytest.approx(list(want.box), abs=1e-2)


def test_stops_at_once_on_sigterm(web_image: str) -> None:
    with run_web(web_image) as web:
        started = time.monotonic()
        docker("stop", "-t", "20", web.name, timeout=60)
        elapsed = time.monotonic() - started
        assert web.inspect()["State"]["ExitCode"] == 0, web.logs()
    assert elapsed < 10
