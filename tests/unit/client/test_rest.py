"""The REST client against httpx.MockTransport: retries, headers, errors, batching."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from PIL import Image

from client import (
    BadRequest,
    DetectionClient,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    RequestTimeout,
    ServerError,
    ServerUnreachable,
    Unauthorized,
)

Handler = Callable[[httpx.Request], httpx.Response]


def png(width: int = 8, height: int = 6) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def v1_answer(request: httpx.Request) -> httpx.Response:
    """One detection per instance, whose score encodes the instance's position."""
    body = json.loads(request.content)
    predictions = [
        {"detections": [{"box": [1, 2, 3, 4], "score": 0.5 + i / 100, "label": "circle",
                         "label_id": 1}], "image_size": [6, 8]}
        for i, _ in enumerate(body["instances"])
    ]
    return httpx.Response(200, json={"predictions": predictions})


def make_client(handler: Handler, sleeps: list[float] | None = None, **settings: object
                ) -> DetectionClient:
    settings.setdefault("protocol", "v1")
    return DetectionClient(
        "http://model.test:8080",
        transport=httpx.MockTransport(handler),
        sleep=(sleeps.append if sleeps is not None else (lambda _s: None)),
        **settings,  # type: ignore[arg-type]
    )


def test_v1_request_carries_base64_images_and_parameters() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return v1_answer(request)

    image = png()
    with make_client(handler) as client:
        result = client.detect_one(image, score_threshold=0.3, max_detections=5,
                                   classes=["circle", "star"])
    body = json.loads(seen[0].content)
    assert seen[0].url.path == "/v1/models/detector:predict"
    assert base64.b64decode(body["instances"][0]["image_bytes"]["b64"]) == image
    assert body["parameters"] == {"score_threshold": 0.3, "max_detections": 5,
                                  "classes": ["circle", "star"]}
    assert result.image_size == (6, 8)
    assert result.detections[0].box == (1.0, 2.0, 3.0, 4.0)
    assert result.detections[0].label == "circle"


def test_batches_are_split_and_results_keep_input_order() -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sizes.append(len(json.loads(request.content)["instances"]))
        return v1_answer(request)

    with make_client(handler, batch_size=4) as client:
        results = client.detect([png()] * 10)
    assert sizes == [4, 4, 2]
    # Each batch restarts the fake's counter, so scores show the position in the batch.
    assert [r.detections[0].score for r in results] == pytest.approx(
        [0.50, 0.51, 0.52, 0.53, 0.50, 0.51, 0.52, 0.53, 0.50, 0.51])
    with make_client(handler) as client:
        sizes.clear()
        client.detect([png()] * 3, batch_size=1)
    assert sizes == [1, 1, 1]


def test_503_with_retry_after_is_retried_after_the_servers_delay() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx.Response(503, headers={"Retry-After": "2"},
                                  json={"error": "queue full"})
        return v1_answer(request)

    with make_client(handler, sleeps, retries=3, backoff=0.1) as client:
        result = client.detect_one(png())
    assert len(calls) == 3
    assert sleeps == [2.0, 2.0]
    assert result.detections


def test_429_without_retry_after_backs_off_exponentially_then_gives_up() -> None:
    sleeps: list[float] = []
    handler = lambda _r: httpx.Response(429, json={"error": "slow down"})  # noqa: E731
    with make_client(handler, sleeps, retries=3, backoff=0.5, max_backoff=1.5) as client, \
            pytest.raises(Overloaded) as info:
        client.detect_one(png())
    assert sleeps == [0.5, 1.0, 1.5]
    assert info.value.status == 429
    assert "slow down" in str(info.value)


def test_400_is_never_retried_and_carries_the_servers_message() -> None:
    calls: list[int] = []

    def handler(_request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"error": "instance 0: image is 0x0 pixels"})

    with make_client(handler, retries=5) as client, pytest.raises(BadRequest) as info:
        client.detect_one(png())
    assert calls == [1]
    assert info.value.message == "instance 0: image is 0x0 pixels"
    assert info.value.status == 400


def test_model_loading_503_is_retried_until_ready() -> None:
    answers = iter([httpx.Response(503, json={"error": "Model with name detector is not ready."})])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or v1_answer(request)

    with make_client(handler) as client:
        assert client.detect_one(png()).detections


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, {"error": "Model with name nope does not exist."}, ModelNotFound),
        (401, {"error": "missing token"}, Unauthorized),
        (403, {"detail": "forbidden"}, Unauthorized),
        (500, {"error": "RuntimeError : boom"}, ServerError),
        (503, {"error": "Model with name detector is not ready."}, ModelNotReady),
        (502, {}, ServerUnreachable),
    ],
)
def test_http_errors_map_to_the_exception_tree(status: int, body: dict[str, str],
                                               error: type[Exception]) -> None:
    handler = lambda _r: httpx.Response(status, json=body)  # noqa: E731
    with make_client(handler, retries=0) as client, pytest.raises(error):
        client.detect_one(png())


def test_malformed_success_body_is_a_server_error() -> None:
    with make_client(lambda _r: httpx.Response(200, text="<html>oops</html>")) as client, \
            pytest.raises(ServerError, match="not JSON"):
        client.detect_one(png())
    with make_client(lambda _r: httpx.Response(200, json={"predictions": []})) as client, \
            pytest.raises(ServerError, match="expected 1 predictions"):
        client.detect_one(png())


def test_connection_refused_is_retried_then_unreachable() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with make_client(handler, retries=2) as client, pytest.raises(ServerUnreachable) as info:
        client.detect_one(png())
    assert len(calls) == 3
    assert "cannot connect to http://model.test:8080: Connection refused" in str(info.value)


def test_read_timeout_is_not_retried() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ReadTimeout("timed out", request=request)

    with make_client(handler, retries=3, timeout=2.5) as client, \
            pytest.raises(RequestTimeout, match="within 2.5s"):
        client.detect_one(png())
    assert calls == [1]


def test_host_token_and_extra_headers_are_sent_on_every_call() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/ready") or request.url.path == "/v1/models/detector":
            return httpx.Response(200, json={"name": "detector", "ready": True})
        return v1_answer(request)

    with make_client(handler, host_header="detector.default.example.com", token="s3cret",
                     headers={"X-Request-Source": "test"}) as client:
        client.detect_one(png())
        client.health()
    assert len(seen) == 2
    for request in seen:
        assert request.headers["host"] == "detector.default.example.com"
        assert request.headers["authorization"] == "Bearer s3cret"
        assert request.headers["x-request-source"] == "test"
        assert request.url.host == "model.test"


def test_health_reports_not_ready_and_raises_on_unknown_model() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "missing" in request.url.path:
            return httpx.Response(404, json={"error": "Model with name missing does not exist."})
        return httpx.Response(503, json={"error": "Model with name detector is not ready."})

    with make_client(handler, protocol="v2") as client:
        health = client.health()
    assert (health.live, health.ready) == (True, False)
    with make_client(handler, protocol="v2", model="missing") as client, \
            pytest.raises(ModelNotFound, match="missing"):
        client.health()


def test_wait_ready_polls_until_ready_and_times_out_with_the_last_reason() -> None:
    answers = [503, 503, 200]

    def handler(_request: httpx.Request) -> httpx.Response:
        status = answers.pop(0) if answers else 200
        return httpx.Response(status, json={"ready": status == 200})

    sleeps: list[float] = []
    with make_client(handler, sleeps, protocol="v2") as client:
        assert client.wait_ready(timeout=30, interval=0.2).ready
    assert sleeps == [0.2, 0.2]

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with make_client(down, protocol="v2") as client, \
            pytest.raises(ServerUnreachable, match="not ready after 0.01s"):
        client.wait_ready(timeout=0.01, interval=0.001)


def test_metadata_is_read_from_the_v2_endpoint() -> None:
    body = {"name": "detector", "versions": ["1"], "platform": "pytorch",
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "num_detections", "datatype": "INT32", "shape": [-1]}]}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v2/models/detector"
        return httpx.Response(200, json=body)

    with make_client(handler) as client:
        metadata = client.metadata()
    assert metadata.inputs[0].shape == (-1,)
    assert metadata.to_dict() == body


def test_pixel_arrays_are_sent_as_png_over_v1() -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        instance = json.loads(request.content)["instances"][0]
        seen.append(base64.b64decode(instance["image_bytes"]["b64"]))
        return v1_answer(request)

    pixels = np.zeros((5, 7, 3), dtype=np.uint8)
    pixels[1, 2] = (10, 20, 30)
    with make_client(handler) as client:
        client.detect_one(pixels)
    decoded = np.asarray(Image.open(io.BytesIO(seen[0])))
    assert np.array_equal(decoded, pixels)


def test_retry_after_accepts_seconds_and_http_dates_and_is_capped() -> None:
    import email.utils
    import time

    from client._http import retry_after_seconds

    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("soon") is None
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8.0 <= (retry_after_seconds(in_ten) or 0) <= 10.0
    sleeps: list[float] = []
    answers = iter([httpx.Response(503, headers={"Retry-After": "3600"})])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or v1_answer(request)

    with make_client(handler, sleeps, max_backoff=20) as client:
        client.detect_one(png())
    assert sleeps == [20.0]
