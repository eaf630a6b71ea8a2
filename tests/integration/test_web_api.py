"""The web backend (``python -m client.web``) in front of the real inference server.

The inference server runs the trained demo detector with a small queue, so that it can
be overloaded on purpose; the web backends are real processes started as users start
them. Differential: what the web API answers equals what the client gets directly.
Order matters in this module: the last test stops the inference server.
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from client import DetectionClient, ImageResult
from client import loadgen as bench
from client.loadgen import metric_totals
from tests.support.servers import DEMO_MODEL_DIR, Server, start_server
from tests.support.web_app import WebApp, shapes_png, start_web, wait_for

pytestmark = pytest.mark.integration

THRESHOLD = 0.3
QUEUE = 4


@pytest.fixture(scope="module")
def inference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The demo detector, one image per batch and a four-image queue (easy to overload)."""
    server = start_server(tmp_path_factory.mktemp("web-inference"), DEMO_MODEL_DIR,
                          "--max_batch_size", "1", "--max_queue_size", str(QUEUE))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web-logs")


@pytest.fixture(scope="module")
def web(inference: Server, logs: Path) -> Iterator[WebApp]:
    app = start_web(inference.http_url, logs, "--timeout", "30", "--max-files", "4",
                    "--health-interval", "1")
    yield app
    app.stop()


def post(app: WebApp, pictures: list[tuple[str, bytes]], timeout: float = 60,
         **fields: str) -> httpx.Response:
    files = [("file", (name, data, "image/png")) for name, data in pictures]
    return httpx.post(f"{app.http_url}/api/detect", files=files, data=fields, timeout=timeout)


def direct(server: Server, pictures: list[bytes], **options: Any) -> list[ImageResult]:
    with DetectionClient(server.http_url, protocol="v2", timeout=60) as client:
        return client.detect(pictures, **options)


def assert_same(answer: dict[str, Any], expected: ImageResult, box_tolerance: float = 1e-3
                ) -> None:
    assert answer["image_size"] == list(expected.image_size)
    got = answer["detections"]
    assert [d["label"] for d in got] == [d.label for d in expected.detections]
    for d, e in zip(got, expected.detections, strict=True):
        assert d["score"] == pytest.approx(e.score, abs=1e-3)
        assert d["box"] == pytest.approx(list(e.box), abs=box_tolerance)
        assert d["label_id"] == e.label_id


def metrics_of(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=10).text


def web_metric(app: WebApp, sample: str) -> float:
    for line in metrics_of(app.http_url).splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{sample} not in the web backend's /metrics")


# ---- answers ---------------------------------------------------------------------------
def test_one_picture_gets_the_services_own_detections(web: WebApp, inference: Server) -> None:
    picture = shapes_png(11)
    r = post(web, [("shapes.png", picture)], score_threshold=str(THRESHOLD))
    assert r.status_code == 200, r.text
    body = r.json()
    (expected,) = direct(inference, [picture], score_threshold=THRESHOLD)
    assert expected.detections, "the demo detector found nothing in three shapes"
    (result,) = body["results"]
    assert result["filename"] == "shapes.png"
    assert_same(result, expected)
    assert body["model"] == "detector"
    assert body["model_version"] == expected.model_version
    assert body["model_version"], "the server names the weights that answered"
    assert 0 < body["timing"]["inference_ms"] <= body["timing"]["total_ms"]


def test_several_pictures_keep_their_order_and_names(web: WebApp, inference: Server) -> None:
    pictures = [shapes_png(seed) for seed in (21, 22, 23)]
    names = ["first.png", "second.png", "third.png"]
    r = post(web, list(zip(names, pictures, strict=True)), score_threshold=str(THRESHOLD))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["filename"] for x in results] == names
    for answer, expected in zip(results, direct(inference, pictures,
                                                score_threshold=THRESHOLD), strict=True):
        assert_same(answer, expected)


def test_threshold_and_class_filter_reach_the_service(web: WebApp, inference: Server) -> None:
    picture = shapes_png(12, objects=4)
    low = post(web, [("a.png", picture)], score_threshold="0.05").json()["results"][0]
    labels = {d["label"] for d in low["detections"]}
    assert len(labels) >= 2, f"want two classes to filter on, got {labels}"
    keep = sorted(labels)[0]
    kept = post(web, [("a.png", picture)], score_threshold="0.05",
                classes=keep).json()["results"][0]
    assert {d["label"] for d in kept["detections"]} == {keep}
    (expected,) = direct(inference, [picture], score_threshold=0.05, classes=[keep])
    assert_same(kept, expected)


@pytest.mark.parametrize("protocol", ["v1", "grpc"])
def test_every_protocol_to_the_service_gives_the_same_answer(
        protocol: str, web: WebApp, inference: Server, logs: Path) -> None:
    picture = shapes_png(13)
    reference = post(web, [("a.png", picture)], score_threshold=str(THRESHOLD)).json()
    other = start_web(inference.http_url, logs, "--protocol", protocol,
                      "--grpc-url", inference.grpc_url)
    try:
        answer = post(other, [("a.png", picture)], score_threshold=str(THRESHOLD))
    finally:
        other.stop()
    assert answer.status_code == 200, answer.text
    # V1 rounds boxes to 0.01 px.
    expected = reference["results"][0]
    got = answer.json()["results"][0]
    assert [d["label"] for d in got["detections"]] == [d["label"] for d in expected["detections"]]
    for a, b in zip(got["detections"], expected["detections"], strict=True):
        assert a["box"] == pytest.approx(b["box"], abs=0.01)


def test_the_benchmark_measures_the_extra_hop(web: WebApp, inference: Server, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    picture = tmp_path / "shapes.png"
    picture.write_bytes(shapes_png(20))
    out = tmp_path / "hop.json"
    status = bench.main(["--url", inference.http_url, "--protocols", "v2bin,web,deepstack",
                         "--web-url", web.http_url, "--clients", "1", "--requests", "6",
                         "--warmup", "0", "--images", str(picture), "--out", str(out)])
    assert status == 0
    direct, through_web, deepstack = json.loads(out.read_text(encoding="utf-8"))["cells"]
    assert [c["protocol"] for c in (direct, through_web, deepstack)] == [
        "v2bin", "web", "deepstack"]
    for cell in (direct, through_web, deepstack):
        assert (cell["requests"], cell["errors"]) == (6, 0)
        assert 0 < cell["model_ms"] < cell["p50_ms"]  # the model call is part of the request
    assert direct["hop_ms"] is None
    for cell in (through_web, deepstack):
        assert 0 < cell["hop_ms"] < cell["p50_ms"]
        # The same picture, the same model: the same detections every way.
        assert cell["detections_per_image"] == direct["detections_per_image"] > 0
    printed = capsys.readouterr().out
    assert "extra hop at 1 client(s), POST /api/detect: direct V2 p50 " in printed
    assert "extra hop at 1 client(s), DeepStack route: direct V2 p50 " in printed


# ---- refusals ------------------------------------------------------------------------
def test_a_bad_file_is_a_400_naming_it_and_costs_the_service_nothing(
        web: WebApp, inference: Server) -> None:
    before = metric_totals(metrics_of(inference.http_url), ["detector_images_total"])
    r = post(web, [("good.png", shapes_png(14)), ("notes.txt", b"not a picture at all")])
    assert r.status_code == 400
    assert r.json() == {"error": "file 'notes.txt' is not a picture; send JPEG, PNG, WebP, "
                                 "BMP or GIF files"}
    after = metric_totals(metrics_of(inference.http_url), ["detector_images_total"])
    assert after == before


def test_the_services_own_refusal_comes_back_as_a_400(web: WebApp) -> None:
    r = post(web, [("a.png", shapes_png(15))], classes="apple")
    assert r.status_code == 400
    message = r.json()["error"]
    assert message.startswith("the inference service refused the request")
    assert "apple" in message
    assert "circle" in message


def test_too_many_pictures_is_a_400_and_too_large_a_413(web: WebApp) -> None:
    r = post(web, [(f"{i}.png", shapes_png(16)) for i in range(5)])
    assert r.status_code == 400
    assert "at most 4 per request" in r.json()["error"]
    noise = Image.effect_noise((3000, 3000), 120).convert("RGB")
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    assert len(buf.getvalue()) > 32 * 1024 * 1024 / 4  # four of them pass 32 MiB
    r = post(web, [(f"{i}.png", buf.getvalue()) for i in range(4)])
    assert r.status_code == 413
    assert "at most 32 MiB per request" in r.json()["error"]


# ---- the service in trouble -----------------------------------------------------------
def flood(inference: Server, count: int = 64) -> threading.Thread:
    """Sends ``count`` pictures in one request straight to the service, in a thread."""
    pictures = [shapes_png(100 + i % 4) for i in range(count)]

    def send() -> None:
        with DetectionClient(inference.http_url, protocol="v2", timeout=120,
                             batch_size=count) as client:
            client.detect(pictures)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def queue_depth(inference: Server) -> float:
    return metric_totals(metrics_of(inference.http_url), ["detector_queue_depth"]).get(
        "detector_queue_depth", 0.0)


def test_an_overloaded_service_is_retried_then_answered(
        inference: Server, logs: Path) -> None:
    """A 64-image request fills the four-image queue for seconds: the service answers
    503 + Retry-After. A backend without retries says so clearly; one with retries waits
    as told and gets its answer."""
    patient = start_web(inference.http_url, logs, "--retries", "10", "--max-backoff", "2")
    impatient = start_web(inference.http_url, logs, "--retries", "0")
    try:
        sender = flood(inference)
        wait_for(lambda: queue_depth(inference) >= 16, 60, "the flood filling the queue",
                 interval=0.05)
        answers: dict[str, httpx.Response] = {}

        def ask(name: str, app: WebApp) -> None:
            answers[name] = post(app, [("a.png", shapes_png(17))], timeout=120)

        threads = [threading.Thread(target=ask, args=item)
                   for item in (("patient", patient), ("impatient", impatient))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        sender.join(120)

        refused = answers["impatient"]
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"].startswith("the inference service is overloaded")
        assert "try again in" in refused.json()["error"]
        assert web_metric(impatient, 'detector_web_inference_errors_total{kind="overloaded"}') == 1

        served = answers["patient"]
        assert served.status_code == 200, served.text
        assert web_metric(patient, "detector_web_inference_retries_total") >= 1
        assert served.json()["timing"]["inference_ms"] >= 500  # it waited as it was told
        for app in (patient, impatient):
            assert httpx.get(f"{app.http_url}/healthz", timeout=5).status_code == 200
    finally:
        patient.stop()
        impatient.stop()


def test_a_service_that_hangs_gives_504_and_the_app_stays_live(
        inference: Server, logs: Path) -> None:
    app = start_web(inference.http_url, logs, "--timeout", "2", "--retries", "0",
                    "--health-interval", "1")
    os.kill(inference.proc.pid, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        started = time.monotonic()
        r = post(app, [("a.png", shapes_png(18))])
        assert r.status_code == 504, r.text
        assert r.json() == {"error": "the inference service did not answer within 2 s; "
                                     "try again, or a smaller picture"}
        assert time.monotonic() - started < 10
        # Liveness never waits on the service; the state shows what happened.
        health = httpx.get(f"{app.http_url}/healthz", timeout=1)
        assert health.status_code == 200
        wait_for(lambda: httpx.get(f"{app.http_url}/healthz", timeout=1).json()
                 ["inference_service"]["state"] == "unreachable", 15, "state unreachable")
    finally:
        os.kill(inference.proc.pid, signal.SIGCONT)
    try:
        wait_for(lambda: post(app, [("a.png", shapes_png(18))]).status_code == 200, 30,
                 "answers again once the service is back")
    finally:
        app.stop()


def test_service_stopped_mid_run_gives_503_json_and_the_app_stays_healthy(
        web: WebApp, inference: Server) -> None:
    """Runs last: stops the module's inference server."""
    assert post(web, [("a.png", shapes_png(19))]).status_code == 200
    wait_for(lambda: httpx.get(f"{web.http_url}/healthz", timeout=2).json()
             ["inference_service"]["state"] == "ready", 15, "state ready")
    assert inference.stop() == 0

    r = post(web, [("a.png", shapes_png(19))])
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    message = r.json()["error"]
    assert message.startswith("the inference service cannot be reached")
    assert "try again later" in message
    assert "Traceback" not in r.text
    assert r.headers["retry-after"]

    health = httpx.get(f"{web.http_url}/healthz", timeout=2)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["inference_service"]["state"] == "unreachable"
    assert web.alive()
    page = httpx.get(f"{web.http_url}/", timeout=2)
    assert page.status_code == 200
    assert web_metric(web, 'detector_web_inference_errors_total{kind="unreachable"}') >= 1
    assert web_metric(web, 'detector_web_inference_service_state{state="unreachable"}') == 1
