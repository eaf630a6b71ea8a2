"""Several detectors in one server: ``--model_repository``, as KServe's agent and Triton's
clients drive it (issue 28).

The agent's sequence (KServe v0.20.0 ``pkg/agent/puller.go``): copy the model into
``<repository>/<name>``, ``POST .../load`` with ``{}``; to remove it, delete the folder, then
``POST .../unload``. Any status but 200 is a failure to the agent.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from launch import ServerFailed, ServerProcess, free_port, start, wait_ready
from tests.support.servers import DEMO_MODEL_DIR, REPO, save_random_model
from tests.support.web_app import shapes_png

pytestmark = pytest.mark.integration

# Eager torch: quick to load, so each test's loads take seconds.
SERVER_ARGS = ("--no_cpu_accel", "--max_batch_size", "4")


@pytest.fixture(scope="module")
def random_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weights ssdlite320 model folder, to copy into repositories."""
    return save_random_model(tmp_path_factory.mktemp("random") / "model")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    shutil.copytree(DEMO_MODEL_DIR, root / "demo")
    return root


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    """The real server on a repository that starts with the demo detector in it."""
    process = start("predictor", ["--model_repository", str(repository), "--max_models", "3",
                                  *SERVER_ARGS],
                    tmp_path_factory.mktemp("logs"), model_name="demo", timeout=240)
    yield process
    process.stop()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


_TRITON_GRPC = """
import base64, json, sys
import numpy as np
import tritonclient.grpc as g
from tritonclient.utils import InferenceServerException
grpc = g.InferenceServerClient(sys.argv[1])
ARG = sys.stdin.read()
out = {}
%s
print(json.dumps(out))
"""


def triton_grpc(target: str, body: str, arg: str = "") -> dict[str, Any]:
    """Runs ``body`` with Triton's gRPC client (``grpc``) in a process of its own: its
    generated protobufs and KServe's both define the 'inference' package, and one
    process's descriptor pool takes only one. ``body`` fills the dict ``out``."""
    done = subprocess.run([sys.executable, "-c", _TRITON_GRPC % body, target], input=arg,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def detect_v1(http: httpx.Client, model: str, image: bytes) -> list[dict[str, Any]]:
    r = http.post(f"/v1/models/{model}:predict", content=image,
                  headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    predictions: list[dict[str, Any]] = r.json()["predictions"]
    return predictions


def index(http: httpx.Client) -> dict[str, dict[str, str]]:
    r = http.post("/v2/repository/index", json={})
    assert r.status_code == 200, r.text
    return {entry["name"]: entry for entry in r.json()}


def test_an_empty_repository_starts_live_and_ready(tmp_path: Path) -> None:
    """The agent fills the repository after the pod starts: the server must come up empty."""
    root = tmp_path / "empty"
    root.mkdir()
    http_port, grpc_port = free_port(), free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "predictor", "--model_repository", str(root),
             "--http_port", str(http_port), "--grpc_port", str(grpc_port), *SERVER_ARGS],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    process = ServerProcess(proc, http_port, grpc_port, log)
    try:
        wait_ready(proc, f"{process.url}/v2/health/live", 120, "predictor",
                   process.log_tail)
        assert httpx.get(f"{process.url}/v2/health/ready").status_code == 200
        assert httpx.get(f"{process.url}/v2/models").json()["models"] == []
        assert httpx.post(f"{process.url}/v2/repository/index").json() == []
    finally:
        process.stop()


def test_the_agent_loads_serves_and_unloads_a_model(server: ServerProcess, http: httpx.Client,
                                                    repository: Path,
                                                    random_folder: Path) -> None:
    shutil.copytree(random_folder, repository / "site-a")
    r = http.post("/v2/repository/models/site-a/load", json={})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "site-a", "load": True}
    assert "site-a" in http.get("/v2/models").json()["models"]
    assert index(http)["site-a"]["state"] == "READY"
    # Every protocol reaches it by name, with its own metadata and readiness.
    assert http.get("/v2/models/site-a/ready").status_code == 200
    assert http.get("/v2/models/site-a").json()["name"] == "site-a"
    detect_v1(http, "site-a", shapes_png(1))
    out = triton_grpc(server.grpc_target, """
image = np.array([base64.b64decode(ARG)], dtype=np.object_)
request = g.InferInput("image", [1], "BYTES")
request.set_data_from_numpy(image)
out["num"] = grpc.infer("site-a", [request]).as_numpy("num_detections").tolist()
out["name"] = grpc.get_model_metadata("site-a").name
""", base64.b64encode(shapes_png(2)).decode())
    assert out["num"] is not None
    assert out["name"] == "site-a"
    # Loading twice is harmless.
    assert http.post("/v2/repository/models/site-a/load", json={}).status_code == 200
    # The per-model metrics carry the model's name.
    assert 'detector_images_total{model="site-a"}' in http.get("/metrics").text

    shutil.rmtree(repository / "site-a")  # the agent deletes the folder first
    r = http.post("/v2/repository/models/site-a/unload", json={})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "site-a", "unload": True}
    r = http.post("/v1/models/site-a:predict", content=shapes_png(1),
                  headers={"content-type": "image/png"})
    assert r.status_code == 404, r.text
    assert "site-a" not in http.get("/v2/models").json()["models"]
    assert "site-a" not in index(http)
    assert 'model="site-a"' not in http.get("/metrics").text  # bounded: served models only
    detect_v1(http, "demo", shapes_png(3))  # the other model never noticed


def test_an_unknown_folder_is_404_and_a_broken_one_400(http: httpx.Client,
                                                       repository: Path) -> None:
    r = http.post("/v2/repository/models/nowhere/load", json={})
    assert r.status_code == 404
    assert "nowhere" in r.json()["error"]
    broken = repository / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"architecture": "no_such_net", "num_classes": 3}')
    r = http.post("/v2/repository/models/broken/load", json={})
    assert r.status_code == 400
    assert "broken: no weights file" in r.json()["error"]
    entry = index(http)["broken"]
    assert entry["state"] == "UNAVAILABLE"
    assert "no weights file" in entry["reason"]
    assert http.get("/v2/models/broken/ready").status_code != 200
    detect_v1(http, "demo", shapes_png(4))
    shutil.rmtree(broken)
    # The agent removes a TrainedModel whose load failed: that unload succeeds.
    assert http.post("/v2/repository/models/broken/unload", json={}).status_code == 200
    assert "broken" not in index(http)
    assert http.post("/v2/repository/models/nowhere/unload", json={}).status_code == 404


def test_a_full_server_refuses_a_load_naming_the_flag(server: ServerProcess,
                                                      http: httpx.Client, repository: Path,
                                                      random_folder: Path) -> None:
    names = ["full-1", "full-2", "full-3"]  # with demo: one past --max_models 3
    for name in names:
        shutil.copytree(random_folder, repository / name)
    try:
        for name in names[:2]:
            assert http.post(f"/v2/repository/models/{name}/load", json={}).status_code == 200
        r = http.post("/v2/repository/models/full-3/load", json={})
        assert r.status_code == 507
        assert "the limit is 3 (--max_models)" in r.json()["error"]
        out = triton_grpc(server.grpc_target, """
try:
    grpc.load_model("full-3")
except InferenceServerException as exc:
    out["error"] = str(exc)
""")
        assert re.search("RESOURCE_EXHAUSTED.*--max_models", out["error"]), out
    finally:
        for name in names:
            http.post(f"/v2/repository/models/{name}/unload", json={})
            shutil.rmtree(repository / name)


def test_tritons_clients_list_load_and_unload(server: ServerProcess, repository: Path,
                                              random_folder: Path) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    shutil.copytree(random_folder, repository / "triton-http")
    shutil.copytree(random_folder, repository / "triton-grpc")
    rest = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    try:
        rest.load_model("triton-http")
        assert rest.is_model_ready("triton-http")
        listed = {m["name"]: m for m in rest.get_model_repository_index()}
        assert listed["triton-http"]["state"] == "READY"
        assert listed["triton-grpc"]["state"] == "UNAVAILABLE"
        assert listed["demo"]["version"]

        out = triton_grpc(server.grpc_target, """
grpc.load_model("triton-grpc")
out["ready"] = grpc.is_model_ready("triton-grpc")
out["states"] = {m.name: m.state for m in grpc.get_model_repository_index().models}
out["listed"] = sorted(m.name for m in grpc.get_model_repository_index(as_json=False).models)
for name in ("nowhere", "../etc"):
    try:
        grpc.load_model(name)
    except InferenceServerException as exc:
        out[name] = str(exc)
grpc.unload_model("triton-grpc")
""")
        assert out["ready"]
        assert out["states"]["triton-grpc"] == "READY"
        assert {"demo", "triton-http", "triton-grpc"} <= set(out["listed"])
        assert "NOT_FOUND" in out["nowhere"]
        assert "INVALID_ARGUMENT" in out["../etc"]
        rest.unload_model("triton-http")
        assert not rest.is_model_ready("triton-http")
        states = {m["name"]: m["state"] for m in rest.get_model_repository_index()}
        assert states["triton-grpc"] == states["triton-http"] == "UNAVAILABLE"
        with pytest.raises(InferenceServerException):
            rest.load_model("nowhere")
    finally:
        shutil.rmtree(repository / "triton-http")
        shutil.rmtree(repository / "triton-grpc")


def test_load_and_unload_while_another_model_serves(server: ServerProcess, http: httpx.Client,
                                                   repository: Path,
                                                   random_folder: Path) -> None:
    """Another model's requests in a loop: none fails, each answer is the one it was before,
    and they keep coming while a model loads (the load is off the event loop)."""
    image = shapes_png(5)
    expected = detect_v1(http, "demo", image)
    assert expected[0]["detections"], "the demo detector should find the shapes"
    answers: list[float] = []
    errors: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while not stop.is_set():
                r = client.post("/v1/models/demo:predict", content=image,
                                headers={"content-type": "image/png"})
                if r.status_code != 200 or r.json()["predictions"] != expected:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                answers.append(time.monotonic())

    worker = threading.Thread(target=loop)
    worker.start()
    loads: list[tuple[float, float]] = []
    try:
        for round_ in range(2):
            name = f"churn-{round_}"
            shutil.copytree(random_folder, repository / name)
            started = time.monotonic()
            assert http.post(f"/v2/repository/models/{name}/load", json={}).status_code == 200
            loads.append((started, time.monotonic()))
            detect_v1(http, name, image)
            shutil.rmtree(repository / name)
            assert http.post(f"/v2/repository/models/{name}/unload", json={}).status_code == 200
    finally:
        stop.set()
        worker.join(60)
    assert errors == []
    assert len(answers) > 4
    during = [t for t in answers for start_, end in loads if start_ < t < end]
    assert during, "no answer from the other model while a model loaded"


def test_unloading_answers_the_requests_already_queued(server: ServerProcess,
                                                       http: httpx.Client, repository: Path,
                                                       random_folder: Path) -> None:
    shutil.copytree(random_folder, repository / "busy")
    assert http.post("/v2/repository/models/busy/load", json={}).status_code == 200
    images = [shapes_png(seed) for seed in range(16)]
    import base64

    body = {"inputs": [{"name": "image", "shape": [len(images)], "datatype": "BYTES",
                        "data": [base64.b64encode(i).decode() for i in images]}]}

    def infer() -> int:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            r = client.post("/v2/models/busy/infer", json=body)
            return r.status_code

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(infer) for _ in range(4)]
        time.sleep(1.0)  # all four are queued: 64 images take seconds on a CPU
        shutil.rmtree(repository / "busy")
        r = http.post("/v2/repository/models/busy/unload", json={})
        statuses = [f.result() for f in futures]
    assert r.status_code == 200, r.text
    assert statuses == [200] * 4
    assert http.post("/v2/models/busy/infer", json=body).status_code == 404


def test_a_repository_start_with_a_broken_model_serves_the_others(
        tmp_path: Path, random_folder: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(random_folder, root / "good")
    (root / "bad").mkdir()
    (root / "bad" / "model.safetensors").write_bytes(b"not weights")
    try:
        process = start("predictor", ["--model_repository", str(root), *SERVER_ARGS],
                        tmp_path / "logs", model_name="good", timeout=180)
    except ServerFailed as exc:
        pytest.fail(str(exc))
    try:
        listed = {m["name"]: m for m in httpx.post(f"{process.url}/v2/repository/index").json()}
        assert listed["good"]["state"] == "READY"
        assert listed["bad"]["state"] == "UNAVAILABLE"
        assert "the architecture is unknown" in listed["bad"]["reason"]
    finally:
        process.stop()


def test_the_cli_lists_the_models_and_detects_with_one_by_name(server: ServerProcess,
                                                               tmp_path: Path) -> None:
    listed = subprocess.run([sys.executable, "-m", "client", "models", "--url", server.url,
                             "--json"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    by_name = {m["name"]: m for m in json.loads(listed.stdout)}
    assert by_name["demo"]["state"] == "READY"
    picture = tmp_path / "shapes.png"
    picture.write_bytes(shapes_png(6))
    found = subprocess.run([sys.executable, "-m", "client", "detect", "--url", server.url,
                            "--model", "demo", "--protocol", "grpc", "--grpc-url",
                            server.grpc_target, str(picture), "--json", "-"],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    unknown = subprocess.run([sys.executable, "-m", "client", "detect", "--url", server.url,
                              "--model", "nowhere", str(picture)],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 4, unknown.stderr  # no model of that name


def test_deepstack_custom_routes_serve_each_model_by_name(server: ServerProcess,
                                                         http: httpx.Client, repository: Path,
                                                         random_folder: Path,
                                                         tmp_path: Path) -> None:
    """An NVR's ``/v1/vision/custom/{model}`` reaches that model; the list lists them all."""
    from tests.support.web_app import start_web

    shutil.copytree(random_folder, repository / "site-x")
    assert http.post("/v2/repository/models/site-x/load", json={}).status_code == 200
    web = start_web(server.url, tmp_path / "web", "--model", "demo")
    try:
        r = httpx.post(f"{web.http_url}/v1/vision/custom/list", timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["models"][0] == "demo"  # the backend's own first
        assert "site-x" in r.json()["models"]
        picture = {"image": ("a.png", shapes_png(7), "image/png")}
        for name in ("demo", "site-x"):
            r = httpx.post(f"{web.http_url}/v1/vision/custom/{name}", files=picture,
                           data={"min_confidence": "0.1"}, timeout=60)
            assert r.status_code == 200, r.text
            assert r.json()["success"] is True
        r = httpx.post(f"{web.http_url}/v1/vision/custom/yolo", files=picture, timeout=30)
        assert r.status_code == 404
        assert "'site-x'" in r.json()["error"]
        # The page's model picker: the list, and a detection by the model chosen.
        listed = httpx.get(f"{web.http_url}/api/models", timeout=30).json()
        assert listed["default"] == "demo"
        assert listed["models"][0] == "demo"
        assert "site-x" in listed["models"]
        page_file = {"file": ("a.png", shapes_png(7), "image/png")}
        r = httpx.post(f"{web.http_url}/api/detect", files=page_file, data={"model": "site-x"},
                       timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "site-x"
        r = httpx.post(f"{web.http_url}/api/detect", files=page_file, data={"model": "yolo"},
                       timeout=60)
        assert r.status_code == 404, r.text
        shutil.rmtree(repository / "site-x")
        assert http.post("/v2/repository/models/site-x/unload", json={}).status_code == 200
        time.sleep(2.5)  # the backend's list of models is a couple of seconds old at most
        r = httpx.post(f"{web.http_url}/v1/vision/custom/site-x", files=picture, timeout=30)
        assert r.status_code == 404, r.text
    finally:
        web.stop()


def test_sigterm_answers_what_it_holds_then_exits_0(tmp_path: Path,
                                                    random_folder: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(random_folder, root / "one")
    process = start("predictor", ["--model_repository", str(root), *SERVER_ARGS],
                    tmp_path / "logs", model_name="one", timeout=180)
    images = [shapes_png(seed) for seed in range(16)]
    import base64

    body = {"inputs": [{"name": "image", "shape": [len(images)], "datatype": "BYTES",
                        "data": [base64.b64encode(i).decode() for i in images]}]}
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(lambda: httpx.post(f"{process.url}/v2/models/one/infer",
                                                     json=body, timeout=120).status_code)
            time.sleep(1.0)
            process.proc.send_signal(signal.SIGTERM)
            assert pending.result() == 200
        assert process.proc.wait(60) == 0, process.log_tail()
    finally:
        process.stop()
