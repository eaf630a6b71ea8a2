"""The web backend against a scripted inference service (httpx.MockTransport).

Every answer the inference service can give maps to one status and one message that says
what to do; the upload limits refuse with 413/400 naming the flag; the app keeps serving
and its own health stays 200 whatever the service does. The real service is in
tests/integration/test_web_api.py.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from client import ClientConfig
from client.web import WebSettings, create_app
from client.web.app import SECURITY_HEADERS
from tests.support.asgi import serve

Handler = Callable[[httpx.Request], httpx.Response]


def png(width: int = 40, height: int = 30) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


def v1_answer(request: httpx.Request) -> httpx.Response:
    """One 'circle' per picture; its score is the picture's position / 10 + 0.5."""
    if request.url.path.endswith("/ready") or request.method == "GET":
        return httpx.Response(200, json={"name": "detector", "ready": True})
    body = json.loads(request.content)
    predictions = [{"detections": [{"box": [1, 2, 30, 20], "score": 0.5 + i / 10,
                                    "label": "circle", "label_id": 1}], "image_size": [30, 40]}
                   for i, _ in enumerate(body["instances"])]
    return httpx.Response(200, json={"predictions": predictions},
                          headers={"x-model-version": "4"})


class Service:
    """A scripted inference service: answers from ``script`` first, then ``v1_answer``."""

    def __init__(self) -> None:
        self.script: list[Handler] = []
        self.infer_calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.infer_calls += 1
            if self.script:
                return self.script.pop(0)(request)
        return v1_answer(request)


@pytest.fixture
def service() -> Service:
    return Service()


@contextlib.contextmanager
def make_app(service: Service | Handler, **settings: Any) -> Iterator[httpx.Client]:
    """The app on a real port, calling ``service`` for the inference service."""
    config = ClientConfig(url="http://inference.test:8080", protocol="v1", retries=2,
                          backoff=0.0, max_backoff=0.05, timeout=5.0)
    app = create_app(WebSettings(client=config, **settings),
                     transport=httpx.MockTransport(service))
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture
def web(service: Service) -> Iterator[httpx.Client]:
    with make_app(service) as client:
        yield client


def post(web: httpx.Client, *pictures: tuple[str, bytes], **fields: str) -> httpx.Response:
    files = [("file", (name, data, "image/png")) for name, data in pictures]
    return web.post("/api/detect", files=files, data=fields)


def metric(web: httpx.Client, line_start: str) -> float:
    for line in web.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{line_start} not in /metrics")


# ---- the happy path ------------------------------------------------------------------
def test_pictures_come_back_in_order_with_their_names(web: httpx.Client,
                                                      service: Service) -> None:
    r = post(web, ("a.png", png()), ("b.png", png()), score_threshold="0.3", classes="circle")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["filename"] for x in body["results"]] == ["a.png", "b.png"]
    assert [x["detections"][0]["score"] for x in body["results"]] == [0.5, 0.6]
    assert body["results"][0]["image_size"] == [30, 40]
    assert body["results"][0]["detections"][0] == {"box": [1, 2, 30, 20], "score": 0.5,
                                                    "label": "circle", "label_id": 1}
    assert body["model"] == "detector"
    assert body["model_version"] == "4"
    timing = body["timing"]
    assert 0 < timing["inference_ms"] <= timing["total_ms"]
    assert r.headers["server-timing"].startswith("inference;dur=")
    assert service.infer_calls == 1


def test_options_reach_the_inference_service() -> None:
    seen: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            seen.append(json.loads(request.content)["parameters"])
        return v1_answer(request)

    with make_app(record) as web:
        assert post(web, ("a.png", png()), score_threshold="0.35", classes="circle, star",
                    max_detections="7").status_code == 200
    assert seen == [{"score_threshold": 0.35, "max_detections": 7,
                     "classes": ["circle", "star"]}]


def test_page_and_assets_are_served_with_a_strict_policy(web: httpx.Client) -> None:
    page = web.get("/")
    assert page.status_code == 200
    assert '<script src="/static/app.js"' in page.text
    assert "http://" not in page.text
    assert "https://" not in page.text
    for key, value in SECURITY_HEADERS.items():
        assert page.headers[key] == value
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        r = web.get(f"/static/{asset}")
        assert r.status_code == 200
        assert kind in r.headers["content-type"]
        assert "https://" not in r.text
    missing = web.get("/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no such page: /nope"}


# ---- what the inference service answers ----------------------------------------------
def answer(status: int, body: dict[str, Any] | None = None,
           headers: dict[str, str] | None = None) -> Handler:
    return lambda _r: httpx.Response(status, json=body or {"error": "x"}, headers=headers)


def refuse(_request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused")


def slow(_request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out")


CASES = [
    # (what the service does, web status, words in the message, Retry-After, metric kind)
    ([answer(400, {"error": "image 0 is 9x9 pixels; too small"})], 400,
     ["refused the request", "9x9 pixels"], None, "bad_request"),
    ([answer(503, {"error": "queue full (--max_queue_size)"}, {"Retry-After": "2"})] * 3, 503,
     ["overloaded", "tried 3 times", "try again in 2 s"], "2", "overloaded"),
    ([answer(503, {"error": "Model detector is not ready"})] * 3, 503,
     ["not ready", "try again"], "5", "not_ready"),
    ([refuse] * 3, 503, ["cannot be reached", "try again later"], "5", "unreachable"),
    ([slow], 504, ["did not answer within 5 s"], None, "timeout"),
    ([answer(500, {"error": "the server log has the details"})], 502,
     ["failed (HTTP 500)", "operator"], None, "server_error"),
    ([answer(401)], 502, ["credentials", "--token"], None, "unauthorized"),
    ([answer(404, {"error": "Model with name detector does not exist."})], 502,
     ["no model 'detector'", "--model"], None, "not_found"),
]


@pytest.mark.parametrize(("script", "status", "words", "retry_after", "kind"), CASES,
                         ids=[c[-1] for c in CASES])
def test_each_failure_of_the_service_has_one_clear_answer(
        web: httpx.Client, service: Service, script: list[Handler], status: int,
        words: list[str], retry_after: str | None, kind: str) -> None:
    service.script = list(script)
    r = post(web, ("a.png", png()))
    assert r.status_code == status, r.text
    message = r.json()["error"]
    for word in words:
        assert word in message
    assert "Traceback" not in r.text
    assert "httpx" not in message
    assert r.headers.get("retry-after") == retry_after
    assert metric(web, f'detector_web_inference_errors_total{{kind="{kind}"}}') == 1
    # The app itself is fine, and the next request is served.
    assert web.get("/healthz").status_code == 200
    assert post(web, ("a.png", png())).status_code == 200


def test_overload_is_retried_honouring_retry_after(web: httpx.Client, service: Service) -> None:
    service.script = [answer(503, {"error": "busy"}, {"Retry-After": "0.02"})] * 2
    r = post(web, ("a.png", png()))
    assert r.status_code == 200, r.text
    assert service.infer_calls == 3
    assert metric(web, "detector_web_inference_retries_total") == 2
    assert r.json()["timing"]["inference_ms"] >= 40  # both waits are inside the call


def test_health_follows_the_service_and_never_fails(web: httpx.Client, service: Service) -> None:
    assert web.get("/healthz").json()["inference_service"]["state"] in ("unknown", "ready")
    service.script = [refuse] * 3
    post(web, ("a.png", png()))
    health = web.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok"
    assert body["inference_service"]["state"] == "unreachable"
    assert body["inference_service"]["model"] == "detector"
    assert metric(web, 'detector_web_inference_service_state{state="unreachable"}') == 1
    assert post(web, ("a.png", png())).status_code == 200
    assert web.get("/healthz").json()["inference_service"]["state"] == "ready"


# ---- the upload limits ---------------------------------------------------------------
def test_too_many_pictures_is_a_400_naming_the_flag(service: Service) -> None:
    with make_app(service, max_files=2) as web:
        r = post(web, *[(f"{i}.png", png()) for i in range(3)])
    assert r.status_code == 400
    assert r.json()["error"] == ("too many pictures: at most 2 per request (the backend's "
                                 "--max-files)")
    assert service.infer_calls == 0


def test_too_large_an_upload_is_a_413_naming_the_flag(service: Service) -> None:
    big = png(600, 600) + b"\0" * 300_000
    with make_app(service, max_upload_bytes=256 * 1024) as web:
        r = post(web, ("big.png", big))
        assert r.status_code == 413
        assert "at most 0.25 MiB" in r.json()["error"]
        assert "--max-upload-mb" in r.json()["error"]

        # Without Content-Length (chunked), the count as it streams stops it too.
        def chunks() -> Iterator[bytes]:
            yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
            yield b"Content-Type: image/png\r\n\r\n"
            for _ in range(40):
                yield b"\0" * 16384

        r = web.post("/api/detect", content=chunks(),
                     headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413
        assert post(web, ("small.png", png())).status_code == 200
    assert service.infer_calls == 1


def test_a_form_without_pictures_is_a_400(web: httpx.Client, service: Service) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="score_threshold"\r\n\r\n0.5\r\n--b--\r\n'
    r = web.post("/api/detect", content=body,
                 headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400
    assert r.json()["error"] == "no picture in the request: add one or more 'file' fields"
    assert service.infer_calls == 0


@pytest.mark.parametrize(("files", "fields", "words"), [
    ([("notes.txt", b"hello, world")], {}, "file 'notes.txt' is not a picture"),
    ([("empty.png", b"")], {}, "file 'empty.png' is empty"),
    ([("a.png", png())], {"score_threshold": "high"}, "score_threshold must be a number"),
    ([("a.png", png())], {"score_threshold": "1.5"}, "score_threshold must be a number"),
    ([("a.png", png())], {"max_detections": "0"}, "max_detections must be"),
    ([("a.png", png())], {"threshold": "0.5"}, "unknown form field(s) 'threshold'"),
], ids=["text", "empty", "word", "above-1", "zero-max", "unknown-field"])
def test_bad_uploads_are_400s_that_say_what_is_wrong(
        web: httpx.Client, service: Service, files: list[tuple[str, bytes]],
        fields: dict[str, str], words: str) -> None:
    r = web.post("/api/detect", files=[("file", f) for f in files], data=fields)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]
    assert service.infer_calls == 0


def test_not_multipart_is_a_400_that_says_how(web: httpx.Client) -> None:
    r = web.post("/api/detect", json={"file": "a.png"})
    assert r.status_code == 400
    assert "multipart/form-data" in r.json()["error"]
    assert web.get("/api/detect").status_code == 405


def test_request_metrics_count_routes_and_statuses(web: httpx.Client) -> None:
    post(web, ("a.png", png()))
    post(web, ("a.txt", b"text"))
    web.get("/healthz")
    assert metric(web, 'detector_web_requests_total{route="/api/detect",status="200"}') == 1
    assert metric(web, 'detector_web_requests_total{route="/api/detect",status="400"}') == 1
    assert metric(web, 'detector_web_requests_total{route="/healthz",status="200"}') == 1
    assert metric(web, "detector_web_images_total") == 1
    assert metric(web, "detector_web_inference_seconds_count") == 1
