"""The DeepStack / CodeProject.AI API of the web backend, called as real products call it
(tests/support/deepstack_clients.py: DeepStack's SDK, Frigate's detector, Home Assistant's
integration), against ``python -m client.web`` in front of the real inference service.

Differential: what each product gets equals the service's own V2 answer for the same
picture, labels mapped and boxes rounded as the API rounds them. The inference service
runs on fixed ports so that it can be stopped and started again (a restart); the last
test does that.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

import launch
from client import DetectionClient, ImageResult
from client.loadgen import metric_totals
from demo.synthetic import make_sample
from tests.support.deepstack_clients import (
    FRIGATE_ROWS,
    frigate_detect,
    frigate_jpeg,
    home_assistant_objects,
    sdk_detect,
)
from tests.support.servers import DEMO_MODEL_DIR, REPO, free_port
from tests.support.web_app import WebApp, shapes_png, start_web, wait_for

pytestmark = pytest.mark.integration

LABEL_MAP = {"circle": "person", "square": "car", "triangle": "dog"}  # "star" passes through
# Every label a COCO name, so that Frigate reads every prediction.
FULL_LABEL_MAP = {**LABEL_MAP, "star": "cat"}
# A few entries of the COCO labelmap a Frigate install detects with (index -> name).
FRIGATE_LABELMAP = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 15: "cat", 16: "dog"}
KEY = "correct horse battery staple"
DETECTION = "/v1/vision/detection"


class Inference:
    """``python -m predictor`` with the demo detector on ports that survive a restart."""

    def __init__(self, log_dir: Path) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 240.0) -> None:
        command = [sys.executable, "-m", "predictor", "--model_name", "detector",
                   "--model_dir", str(DEMO_MODEL_DIR), "--http_port", str(self.http_port),
                   "--grpc_port", str(self.grpc_port)]
        with open(self.log_dir / f"predictor-{time.monotonic_ns()}.log", "wb") as log:
            self.proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for(self.ready, timeout, "the inference service ready", interval=0.3)

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the inference service exited with {self.proc.returncode}")
        try:
            return httpx.get(f"{self.url}/v2/models/detector/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            launch.stop(self.proc, 30)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deepstack-logs")


@pytest.fixture(scope="module")
def inference(logs: Path) -> Iterator[Inference]:
    service = Inference(logs)
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def web(inference: Inference, logs: Path) -> Iterator[WebApp]:
    labels = logs / "labels.json"
    labels.write_text(json.dumps(LABEL_MAP))
    app = start_web(inference.url, logs, "--label-map", str(labels), "--max-upload-mb", "1",
                    "--health-interval", "1")
    yield app
    app.stop()


@pytest.fixture(scope="module")
def frigate_web(inference: Inference, logs: Path) -> Iterator[WebApp]:
    """A backend as a Frigate install needs it: every label a name Frigate knows."""
    labels = logs / "frigate-labels.json"
    labels.write_text(json.dumps(FULL_LABEL_MAP))
    app = start_web(inference.url, logs, "--label-map", str(labels))
    yield app
    app.stop()


@pytest.fixture(scope="module")
def keyed(inference: Inference, logs: Path) -> Iterator[WebApp]:
    """A backend with an API key, also on the page's API."""
    key_file = logs / "api-key"
    key_file.write_text(KEY + "\n")
    app = start_web(inference.url, logs, "--api-key-file", str(key_file), "--protect-page-api")
    yield app
    app.stop()


def frame_of(picture: bytes) -> np.ndarray:
    """A picture as the RGB frame Frigate's detector holds."""
    return np.asarray(Image.open(io.BytesIO(picture)).convert("RGB"))


def port_of(app: WebApp) -> int:
    return int(app.http_url.rsplit(":", 1)[1])


def direct(inference: Inference, picture: bytes, threshold: float | None = None
           ) -> ImageResult:
    with DetectionClient(inference.url, protocol="v2", timeout=60) as client:
        return client.detect_one(picture, score_threshold=threshold)


def whole(value: float, size: int) -> int:
    return min(max(math.floor(value + 0.5), 0), size)


def expected(result: ImageResult, labels: dict[str, str] = LABEL_MAP) -> list[dict[str, Any]]:
    """The service's answer as the DeepStack API must give it (``raw``: the float box)."""
    height, width = result.image_size
    return [{"label": labels.get(d.label, d.label), "confidence": d.score,
             "x_min": whole(d.box[0], width), "y_min": whole(d.box[1], height),
             "x_max": whole(d.box[2], width), "y_max": whole(d.box[3], height),
             "raw": dict(zip(("x_min", "y_min", "x_max", "y_max"), d.box, strict=True))}
            for d in sorted(result.detections, key=lambda d: -d.score)]


def assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [p["label"] for p in got] == [p["label"] for p in want]
    for g, w in zip(got, want, strict=True):
        assert g["confidence"] == pytest.approx(w["confidence"], abs=1e-4)
        for key in ("x_min", "y_min", "x_max", "y_max"):
            assert isinstance(g[key], int)
            # Exact, unless the model's float edge sits a hair from .5 (batching may move
            # it by 1e-4 between the two calls).
            near_half = abs(w["raw"][key] % 1 - 0.5) < 0.01
            assert g[key] == w[key] or (near_half and abs(g[key] - w[key]) == 1), (key, g, w)


def post(app: WebApp, path: str = DETECTION, files: Any = None, **data: str) -> httpx.Response:
    return httpx.post(f"{app.http_url}{path}", files=files, data=data, timeout=60)


def metric(app: WebApp, sample: str) -> float:
    """A sample of the backend's /metrics: one labelled line, or a name summed over labels."""
    text = httpx.get(f"{app.http_url}/metrics", timeout=10).text
    if "{" not in sample:
        return metric_totals(text, [sample]).get(sample, 0.0)
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{sample} not in the backend's /metrics")


# ---- the three products ------------------------------------------------------------------
def test_deepstacks_sdk_gets_the_services_detections(web: WebApp, inference: Inference) -> None:
    picture = shapes_png(37, objects=4)
    got = sdk_detect("127.0.0.1", port_of(web), picture, min_confidence=0.3)
    want = expected(direct(inference, picture, 0.3))
    assert want, "the demo detector found nothing in four shapes"
    assert_same(got, want)
    assert [p["confidence"] for p in got] == sorted((p["confidence"] for p in got), reverse=True)
    # The custom-model route serves the same model; the page's API keeps the model's labels.
    assert_same(sdk_detect("127.0.0.1", port_of(web), picture, min_confidence=0.3,
                           custom_model="detector"), want)
    page = httpx.post(f"{web.http_url}/api/detect", files={"file": ("a.png", picture)},
                      data={"score_threshold": "0.3"}, timeout=60).json()
    assert {d["label"] for d in page["results"][0]["detections"]} <= {
        "circle", "square", "triangle", "star"}


def test_the_whole_answer_has_codeproject_ais_fields(web: WebApp) -> None:
    r = post(web, files={"image": ("frame.png", shapes_png(39))})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert body["count"] == len(body["predictions"])
    assert body["code"] == 200
    assert body["moduleId"] == "kserve-detector"
    assert 0 <= body["inferenceMs"] <= body["processMs"]
    assert body["message"].startswith("Found ") or body["message"] == "No objects found"
    assert isinstance(body["duration"], float)
    assert body["duration"] == pytest.approx(body["processMs"] / 1000, abs=0.002)
    assert body["analysisRoundTripMs"] == body["inferenceMs"]
    assert (body["moduleName"], body["inferenceDevice"]) == ("KServe detector", "CPU")
    assert len(body["requestId"]) == 36
    assert body["processedBy"]
    assert body["timestampUTC"].endswith(" GMT")


def test_agent_dvrs_get_models_lists_the_served_model(web: WebApp) -> None:
    r = httpx.post(f"{web.http_url}/v1/vision/custom/list", timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["success"], body["models"], body["command"]) == (True, ["detector"],
                                                                  "list-custom")
    assert (body["code"], body["moduleId"]) == (200, "kserve-detector")
    # Each model listed is one a product can call.
    assert sdk_detect("127.0.0.1", port_of(web), shapes_png(3),
                      custom_model=body["models"][0]) is not None


def test_codeproject_ai_clients_ping_the_server_on_both_paths(web: WebApp) -> None:
    for path in ("/v1/server/status/ping", "/v1/status/ping"):
        r = httpx.get(f"{web.http_url}{path}", timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["success"], body["code"]) == (True, 200)
        assert body["message"] == "{major}.{minor}.{patch}".format(**body["version"])


def test_frigate_gets_the_rows_it_would_act_on(web: WebApp, inference: Inference,
                                               logs: Path) -> None:
    frame = np.asarray(Image.open(io.BytesIO(shapes_png(39, objects=4)))
                       .convert("RGB"))
    url = f"{web.http_url}{DETECTION}"
    rows = frigate_detect(url, frame, FRIGATE_LABELMAP, timeout=5.0)
    # What Frigate makes of the service's own answer at 0.4 (what the backend asks for when,
    # as from Frigate, no min_confidence is sent), computed the way its detector reads it.
    want = np.zeros_like(rows)
    for i, p in enumerate(expected(direct(inference, frigate_jpeg(frame), 0.4))):
        index = next((k for k, v in FRIGATE_LABELMAP.items() if v == p["label"]), -1)
        if p["confidence"] < 0.4 or index < 0:
            break
        want[i] = [index, p["confidence"], p["y_min"] / 320, p["x_min"] / 320,
                   p["y_max"] / 320, p["x_max"] / 320]
    assert want[0, 1] > 0, "nothing for Frigate to act on in this picture"
    np.testing.assert_allclose(rows, want, atol=1.5 / 320)
    # Without --label-map the model's own names mean nothing to Frigate: it stops at once.
    plain = start_web(inference.url, logs)
    try:
        assert not frigate_detect(f"{plain.http_url}{DETECTION}", frame, FRIGATE_LABELMAP,
                                  timeout=5.0).any()
    finally:
        plain.stop()


def test_home_assistant_finds_its_targets(web: WebApp, inference: Inference) -> None:
    picture = shapes_png(42, objects=4)
    targets = [{"target": "person", "confidence": 30.0}, {"target": "vehicle",
                                                         "confidence": 30.0}]
    objects, found = home_assistant_objects("127.0.0.1", port_of(web), picture, targets,
                                            timeout=30)
    want = expected(direct(inference, picture, 0.1))
    assert [o["name"] for o in objects] == [p["label"] for p in want]
    assert [o["confidence"] for o in objects] == pytest.approx(
        [round(p["confidence"] * 100, 3) for p in want], abs=0.01)
    assert [o["name"] for o in found] == [p["label"] for p in want if
                                          p["label"] in ("person", "car")
                                          and p["confidence"] * 100 > 30.0]
    assert found, "no person or vehicle above 30 % in this picture"


# ---- refusals, in the API's shape ----------------------------------------------------------
def test_refusals_say_what_is_wrong_in_the_apis_shape(web: WebApp, inference: Inference) -> None:
    before = metric_totals(httpx.get(f"{inference.url}/metrics").text, ["detector_images_total"])
    noise = Image.effect_noise((1200, 1200), 120).convert("RGB")
    big = io.BytesIO()
    noise.save(big, format="PNG")
    cases = [
        (post(web, files={"image": ("notes.txt", b"not a picture")}), 400, "not a picture"),
        (post(web, image="text, not a file"), 400, "'image' field"),
        (post(web, files={"image": ("a.png", shapes_png(1))}, min_confidence="high"), 400,
         "min_confidence must be a number from 0 to 1"),
        (post(web, files={"image": ("a.png", shapes_png(1))}, min_confidence="1.5"), 400,
         "min_confidence must be a number from 0 to 1"),
        (post(web, files={"image": ("a.png", shapes_png(1))}, min_confidence="-0.2"), 400,
         "min_confidence must be a number from 0 to 1, got '-0.2'"),
        (post(web, files={"image": ("a.png", shapes_png(1))}, min_confidence="nan"), 400,
         "min_confidence must be a number from 0 to 1, got 'nan'"),
        (post(web, files={"image": ("big.png", big.getvalue())}), 413, "at most 1 MiB"),
        (post(web, "/v1/vision/custom/yolo", files={"image": ("a.png", shapes_png(1))}), 404,
         "this backend serves 'detector'"),
        (httpx.get(f"{web.http_url}{DETECTION}"), 405, "GET is not allowed"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert (body["success"], body["code"]) == (False, status)
        assert words in body["error"], body
        assert "predictions" not in body  # Frigate reads "no predictions" as no detections
    after = metric_totals(httpx.get(f"{inference.url}/metrics").text, ["detector_images_total"])
    assert after == before, "a refused request reached the inference service"


def test_min_confidence_below_0_1_is_raised_to_deepstacks_floor(web: WebApp,
                                                                inference: Inference) -> None:
    picture = shapes_png(36, objects=4)
    for asked in (0.0, 0.05):
        got = sdk_detect("127.0.0.1", port_of(web), picture, min_confidence=asked)
        assert_same(got, expected(direct(inference, picture, 0.1)))
    assert min(p["confidence"] for p in got) >= 0.1


def test_frigate_without_min_confidence_gets_detections_down_to_0_4(
        frigate_web: WebApp, inference: Inference) -> None:
    frame = frame_of(shapes_png(33, objects=4))
    # The service's own default (0.5) would drop this picture's 0.47 square.
    served = direct(inference, frigate_jpeg(frame))
    assert all(d.score >= 0.5 for d in served.detections)
    rows = frigate_detect(f"{frigate_web.http_url}{DETECTION}", frame, FRIGATE_LABELMAP,
                          timeout=5.0)
    found = rows[rows[:, 1] > 0]
    assert len(found) == len(served.detections) + 1, rows
    assert 0.4 <= found[-1, 1] < 0.5, "no detection between 0.4 and 0.5 reached Frigate"
    assert FRIGATE_LABELMAP[int(found[-1, 0])] == "car"  # the square, mapped
    # The same default for every DeepStack client that sends no min_confidence.
    body = post(frigate_web, files={"image": ("a.jpg", frigate_jpeg(frame))}).json()
    assert min(p["confidence"] for p in body["predictions"]) == pytest.approx(found[-1, 1],
                                                                              abs=1e-4)


def test_a_stock_frigate_never_overflows_on_a_crowded_frame(
        frigate_web: WebApp, inference: Inference, logs: Path) -> None:
    crowd, boxes, _ = make_sample(0, 320, 40, 40, small_share=1.0)  # 40 small shapes
    frame = np.asarray(crowd.convert("RGB"))
    want = expected(direct(inference, frigate_jpeg(frame), 0.4), FULL_LABEL_MAP)
    assert len(want) > FRIGATE_ROWS, f"only {len(want)} detections: not a crowded frame"
    # Parsed as Frigate's plugin parses it: 20 rows, the 20 best, no IndexError.
    rows = frigate_detect(f"{frigate_web.http_url}{DETECTION}", frame, FRIGATE_LABELMAP,
                          timeout=5.0)
    np.testing.assert_allclose(rows[:, 1], [p["confidence"] for p in want[:FRIGATE_ROWS]],
                               atol=1e-4)
    body = post(frigate_web, files={"image": ("crowd.jpg", frigate_jpeg(frame))}).json()
    assert body["count"] == len(body["predictions"]) == FRIGATE_ROWS
    # Lifting the cap past what Frigate holds is what would break it.
    labels = logs / "frigate-labels.json"
    uncapped = start_web(inference.url, logs, "--label-map", str(labels),
                         "--max-predictions", "100")
    try:
        with pytest.raises(IndexError):
            frigate_detect(f"{uncapped.http_url}{DETECTION}", frame, FRIGATE_LABELMAP,
                           timeout=5.0)
    finally:
        uncapped.stop()


def test_a_picture_in_any_file_field_is_detected_as_codeproject_ai_takes_it(
        web: WebApp, inference: Inference) -> None:
    first, second = shapes_png(37, objects=4), shapes_png(38, objects=2)
    want = expected(direct(inference, first, 0.4))
    # A .NET or Blue Iris client may name the part anything, and send more parts.
    for files in ([("upload", ("a.png", first)), ("upload2", ("b.png", second))],
                  [("file", ("a.png", first)), ("notes", ("n.txt", b"not a picture"))],
                  [("other", ("b.png", second)), ("image", ("a.png", first))]):
        r = post(web, files=files)
        assert r.status_code == 200, r.text
        assert_same(r.json()["predictions"], want)


# ---- access and load ------------------------------------------------------------------------
def test_the_api_key_is_required_when_set_and_on_the_page_api_when_asked(
        keyed: WebApp, web: WebApp) -> None:
    picture = {"image": ("a.png", shapes_png(5))}
    before = metric(keyed, "detector_web_refused_requests_total")
    for fields, headers in (({}, {}), ({"api_key": "wrong"}, {}),
                            ({}, {"Authorization": "Bearer wrong"})):
        r = httpx.post(f"{keyed.http_url}{DETECTION}", files=picture, data=fields,
                       headers=headers, timeout=30)
        assert r.status_code == 401, r.text
        assert r.json()["success"] is False
        assert r.headers["www-authenticate"] == "Bearer"
    assert post(keyed, files=picture, api_key=KEY).status_code == 200
    assert httpx.post(f"{keyed.http_url}{DETECTION}", files=picture, timeout=30,
                      headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert sdk_detect("127.0.0.1", port_of(keyed), shapes_png(5), api_key=KEY) is not None
    page = {"file": ("a.png", shapes_png(5))}
    refused = httpx.post(f"{keyed.http_url}/api/detect", files=page, timeout=30)
    assert refused.status_code == 401
    assert "error" in refused.json()
    assert httpx.post(f"{keyed.http_url}/api/detect", files=page, data={"api_key": KEY},
                      timeout=30).status_code == 200
    assert metric(keyed, "detector_web_refused_requests_total") - before == 4
    # A backend with no key takes whatever a product sends in api_key.
    assert post(web, files=picture, api_key="anything").status_code == 200


def test_a_wrong_key_without_a_picture_is_a_401_as_from_deepstack(keyed: WebApp) -> None:
    url = f"{keyed.http_url}{DETECTION}"
    text_only = {"api_key": (None, "wrong"), "min_confidence": (None, "2")}
    no_picture = httpx.post(url, files=text_only, timeout=30)
    assert no_picture.status_code == 401, no_picture.text
    assert no_picture.json() == {"success": False, "error": "incorrect API key", "code": 401}
    for response in (httpx.post(url, data={"api_key": "wrong"}, timeout=30),  # not multipart
                     httpx.post(url, timeout=30)):  # no body at all
        assert response.status_code == 401, response.text
        assert (response.json()["success"], response.json()["code"]) == (False, 401)
    # With the right key, what is wrong with the request is said.
    right = {"api_key": (None, KEY)}
    r = httpx.post(url, files=right, timeout=30)
    assert r.status_code == 400
    assert "no picture" in r.json()["error"]


def test_the_in_flight_cap_refuses_at_once_and_recovers(inference: Inference,
                                                        logs: Path) -> None:
    capped = start_web(inference.url, logs, "--max-in-flight", "1", "--max-files", "1",
                       "--timeout", "60")
    held: dict[str, httpx.Response] = {}
    first = threading.Thread(target=lambda: held.update(
        r=post(capped, files={"image": ("a.png", shapes_png(6))})), daemon=True)
    try:
        inference.signal(signal.SIGSTOP)  # the first picture stays in flight
        try:
            first.start()
            wait_for(lambda: metric(capped, "detector_web_pictures_in_flight") == 1, 30,
                     "one picture in flight")
            started = time.monotonic()
            refused = post(capped, files={"image": ("b.png", shapes_png(7))})
            assert time.monotonic() - started < 2, "the refusal waited"
        finally:
            inference.signal(signal.SIGCONT)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "--max-in-flight" in refused.json()["error"]
        assert metric(capped, 'detector_web_refused_requests_total{reason="in_flight"}') == 1
        first.join(60)
        assert held["r"].status_code == 200, held["r"].text
        assert post(capped, files={"image": ("c.png", shapes_png(8))}).status_code == 200
        assert metric(capped, "detector_web_pictures_in_flight") == 0
    finally:
        capped.stop()


def test_a_service_too_slow_is_a_504_in_the_apis_shape(inference: Inference,
                                                       logs: Path) -> None:
    impatient = start_web(inference.url, logs, "--timeout", "1", "--retries", "0")
    inference.signal(signal.SIGSTOP)
    try:
        r = post(impatient, files={"image": ("a.png", shapes_png(9))})
        assert r.status_code == 504, r.text
        assert r.json() == {"success": False, "code": 504, "error": (
            "the inference service did not answer within 1 s; try again, or a smaller "
            "picture")}
    finally:
        inference.signal(signal.SIGCONT)
        impatient.stop()


def test_a_service_restart_is_a_503_then_served(web: WebApp, inference: Inference) -> None:
    """Runs last: restarts the module's inference service."""
    picture = {"image": ("a.png", shapes_png(10))}
    assert post(web, files=picture).status_code == 200
    inference.stop()
    down = post(web, files=picture)
    assert down.status_code == 503, down.text
    assert int(down.headers["retry-after"]) >= 1
    assert down.json()["success"] is False
    assert "cannot be reached" in down.json()["error"]
    inference.start()
    wait_for(lambda: post(web, files=picture).status_code == 200, 60,
             "served again after the restart")
