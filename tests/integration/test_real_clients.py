"""What new users hit with clients this project did not write, one test per report.

Each test is named after what the user saw (or now sees); the differential matrix in
test_differential.py checks the detections themselves.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.clients import Senders

pytestmark = pytest.mark.integration


def blank_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (128, 128, 128)).save(buf, "JPEG")
    return buf.getvalue()


def v2_json(image: bytes, **extra: Any) -> dict[str, Any]:
    """The README's V2 JSON request."""
    return {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                        "data": [base64.b64encode(image).decode()]}], **extra}


def metric(server: Any, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.http_url}/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}(\{{{re.escape(want)}\}})? ([0-9.e+]+)$" if want else \
        rf"^{re.escape(name)} ([0-9.e+]+)$"
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m:
            return float(m.groups()[-1])
    return 0.0


@pytest.fixture
def http(served_model: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served_model.http_url, timeout=60) as client:
        yield client


# ---- 1. zero detections --------------------------------------------------------------

def test_a_picture_without_objects_gets_an_empty_answer_not_a_500(http: httpx.Client) -> None:
    r = http.post("/v2/models/detector/infer", json=v2_json(blank_jpeg()))
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["num_detections"]["data"] == [0]
    assert outputs["detection_boxes"]["shape"] == [1, 0, 4]
    assert outputs["detection_boxes"]["data"] == []


def test_kserves_own_rest_client_reads_an_empty_answer(served_model: Any) -> None:
    senders = Senders(served_model.http_url, served_model.grpc_url)
    try:
        got = senders.kserve_rest_v2([blank_jpeg()], {"score_threshold": 1.0})
    finally:
        senders.close()
    assert got["num_detections"].tolist() == [0]
    assert got["detection_labels"].shape == (1, 0)


# ---- 2. a 500 must not break the pooled connection -------------------------------------

def test_the_pooled_connection_survives_a_server_error(unused_port: int) -> None:
    """A real uvicorn with the real guard and KServe's own handlers; a route that crashes."""
    import uvicorn
    from fastapi import FastAPI
    from kserve.errors import generic_exception_handler

    from predictor.server.rest_middleware import RequestGuard

    app = FastAPI()

    @app.post("/crash")
    async def crash() -> dict[str, str]:
        raise RuntimeError("secret detail")

    @app.get("/ok")
    async def ok() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(RequestGuard, max_body_bytes=1000)
    app.add_exception_handler(Exception, generic_exception_handler)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=unused_port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{unused_port}", timeout=10) as client:
            for _ in range(50):
                try:
                    client.get("/ok")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            first = client.post("/crash", content=b"{}")
            assert first.status_code == 500
            assert "secret" not in first.text
            assert first.headers["x-request-id"] in first.json()["error"]
            second = client.get("/ok")  # same pooled connection: must not be dropped
            assert second.status_code == 200
            third = client.post("/crash", content=b"{}")
            assert third.status_code == 500
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def unused_port() -> int:
    from tests.support.servers import free_port

    return free_port()


def test_the_connection_survives_every_kind_of_error(http: httpx.Client) -> None:
    for method, path, body in [("POST", "/v2/models/detector/infer", b"{"),
                               ("POST", "/v2/models/nope/infer", b"{}"),
                               ("GET", "/v2/models/detector/infer", b""),
                               ("POST", "/no/such/route", b"")]:
        assert http.request(method, path, content=body).status_code >= 400
        assert http.get("/v2/health/live").status_code == 200, f"after {method} {path}"


# ---- 3. media-type parameters and text/plain ------------------------------------------

@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8",
                                          "text/plain;charset=UTF-8"])
def test_json_sent_with_a_charset_or_as_text_is_read_as_json(http: httpx.Client,
                                                             content_type: str) -> None:
    body = json.dumps({"instances": [{"b64": base64.b64encode(blank_jpeg()).decode()}]})
    r = http.post("/v1/models/detector:predict", content=body.encode(),
                  headers={"content-type": content_type})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["image_size"] == [240, 320]


# ---- 4. classes as a list in V2 JSON -----------------------------------------------------

def test_v2_json_classes_list_is_honoured(http: httpx.Client) -> None:
    image = blank_jpeg()
    r = http.post("/v2/models/detector/infer", json=v2_json(
        image, parameters={"classes": ["circle", "square"], "score_threshold": 0.05}))
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert set(out["detection_labels"]["data"]) <= {"circle", "square", ""}
    bad = http.post("/v2/models/detector/infer", json=v2_json(image, parameters={
        "classes": ["unicorn"]}))
    assert bad.status_code == 400
    assert "unknown class name 'unicorn'" in bad.json()["error"]


# ---- 5. gRPC answers only the outputs asked -------------------------------------------------

def test_grpc_answers_only_the_outputs_asked(served_model: Any) -> None:
    senders = Senders(served_model.http_url, served_model.grpc_url)
    try:
        got = senders.kserve_grpc([blank_jpeg()], {}, outputs=["num_detections"])
        triton = senders.triton_grpc([blank_jpeg()], {}, outputs=["num_detections"])
    finally:
        senders.close()
    assert list(got) == ["num_detections"]
    assert list(triton) == ["num_detections"]


# ---- 6. refused before the model runs -----------------------------------------------------

def _binary(header: dict[str, Any], raw: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + raw, {"inference-header-content-length": str(len(head)),
                        "content-type": "application/octet-stream"}


@pytest.mark.parametrize(("extra", "message"), [
    ({"id": 7}, '"id" must be a string'),
    ({"outputs": [{"name": "boxes"}]}, "unknown output 'boxes'"),
])
def test_a_bad_id_or_output_is_a_400_before_any_model_time(
        served_model: Any, http: httpx.Client, extra: dict[str, Any], message: str) -> None:
    image = blank_jpeg()
    raw = len(image).to_bytes(4, "little") + image
    body, headers = _binary({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                         "parameters": {"binary_data_size": len(raw)}}],
                             **extra}, raw)
    before = metric(served_model, "detector_images_total")
    for request in (lambda: http.post("/v2/models/detector/infer", content=body, headers=headers),
                    lambda: http.post("/v2/models/detector/infer", json=v2_json(image, **extra))):
        r = request()
        assert r.status_code == 400, r.text
        assert message in r.json()["error"]
    assert metric(served_model, "detector_images_total") == before


# ---- 8. one error shape, every refusal counted ------------------------------------------------

def test_404_and_405_say_error_like_everything_else(http: httpx.Client) -> None:
    r = http.get("/v3/anything")
    assert r.status_code == 404
    assert "POST /v2/models/NAME/infer" in r.json()["error"]
    r = http.delete("/v2/models/detector/infer")
    assert r.status_code == 405
    assert set(r.json()) == {"error"}
    r = http.post("/v2/models/unknown/infer", json=v2_json(blank_jpeg()))
    assert r.status_code == 404
    assert "unknown" in r.json()["error"]


def test_every_400_is_counted_as_invalid(served_model: Any, http: httpx.Client) -> None:
    before = metric(served_model, "detector_rejected_requests_total", reason="invalid")
    bad_header = {"inference-header-content-length": "many", "content-type": "application/json"}
    sent = [
        http.post("/v2/models/detector/infer", content=b"{not json"),
        http.post("/v2/models/detector/infer", content=b"{}", headers=bad_header),
        http.post("/v2/models/detector/infer", json=v2_json(blank_jpeg(), outputs=[{"name": "x"}])),
        http.post("/v1/models/detector:predict", json={"instances": [{"b64": "!!"}]}),
        http.post("/v1/models/detector:predict", content=b"GIF89a broken"),
    ]
    assert [r.status_code for r in sent] == [400] * len(sent)
    after = metric(served_model, "detector_rejected_requests_total", reason="invalid")
    assert after - before == len(sent)


def test_grpc_refusals_are_counted_too(served_model: Any) -> None:
    import grpc

    before = metric(served_model, "detector_rejected_requests_total", reason="invalid")
    senders = Senders(served_model.http_url, served_model.grpc_url)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            senders.kserve_grpc([b"not an image"], {})
    finally:
        senders.close()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = metric(served_model, "detector_rejected_requests_total", reason="invalid")
    assert after - before == 1


# ---- compressed requests ------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_requests_as_tritons_client_sends_them(served_model: Any,
                                                          encoding: str) -> None:
    import tritonclient.http as th

    client = th.InferenceServerClient(f"127.0.0.1:{served_model.http_port}", network_timeout=60)
    tensor = th.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([blank_jpeg()], dtype=object), binary_data=True)
    result = client.infer("detector", [tensor], request_compression_algorithm=encoding,
                          parameters={"score_threshold": 1.0})
    client.close()
    assert result.as_numpy("num_detections").tolist() == [0]


def test_compressed_v1_with_plain_httpx(http: httpx.Client) -> None:
    body = json.dumps({"instances": [{"b64": base64.b64encode(blank_jpeg()).decode()}]}).encode()
    for encoding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        r = http.post("/v1/models/detector:predict", content=packed,
                      headers={"content-encoding": encoding, "content-type": "application/json"})
        assert r.status_code == 200, (encoding, r.text)


def test_a_gzip_bomb_is_refused_with_413_and_the_server_keeps_serving(
        served_model: Any, http: httpx.Client) -> None:
    limit = 64 * 1024 * 1024
    bomb = gzip.compress(b"\0" * (limit + 1024 * 1024), compresslevel=9)
    assert len(bomb) < 200_000
    r = http.post("/v2/models/detector/infer", content=bomb,
                  headers={"content-encoding": "gzip", "content-type": "application/json"})
    assert r.status_code == 413
    assert "--max_body_bytes" in r.json()["error"]
    assert http.post("/v2/models/detector/infer", json=v2_json(blank_jpeg())).status_code == 200


# ---- model version and request id ------------------------------------------------------------

def test_every_answer_names_the_model_version(served_model: Any, http: httpx.Client) -> None:
    weights = Path(served_model.model_dir) / "model.safetensors"
    version = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    meta = http.get("/v2/models/detector").json()
    assert meta["versions"] == [version]
    v2 = http.post("/v2/models/detector/infer", json=v2_json(blank_jpeg()))
    assert v2.json()["model_version"] == version
    assert v2.headers["x-model-version"] == version
    v1 = http.post("/v1/models/detector:predict", content=blank_jpeg(),
                   headers={"content-type": "image/jpeg"})
    assert v1.headers["x-model-version"] == version
    assert set(v1.json()) == {"predictions"}  # strict V1 clients see the usual body


def test_the_model_version_over_grpc(served_model: Any) -> None:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as stubs

    with grpc.insecure_channel(served_model.grpc_url) as channel:
        meta = stubs.GRPCInferenceServiceStub(channel).ModelMetadata(
            pb.ModelMetadataRequest(name="detector"), timeout=30)
    weights = Path(served_model.model_dir) / "model.safetensors"
    assert list(meta.versions) == [hashlib.sha256(weights.read_bytes()).hexdigest()[:12]]


def test_a_named_version_is_served_only_if_it_is_this_one(served_model: Any,
                                                          http: httpx.Client) -> None:
    version = http.get("/v2/models/detector").json()["versions"][0]
    ok = http.post(f"/v2/models/detector/versions/{version}/infer", json=v2_json(blank_jpeg()))
    assert ok.status_code == 200
    wrong = http.post("/v2/models/detector/versions/0/infer", json=v2_json(blank_jpeg()))
    assert wrong.status_code == 404
    assert f"serves version '{version}'" in wrong.json()["error"]
    assert http.get(f"/v2/models/detector/versions/{version}/ready").json()["ready"] is True
    assert http.get(f"/v2/models/detector/versions/{version}").json()["versions"] == [version]
    assert http.get("/v2/models/detector/versions/0/ready").status_code == 404


def test_the_request_id_comes_back(http: httpx.Client) -> None:
    r = http.post("/v2/models/detector/infer", json=v2_json(blank_jpeg(), id="abc"),
                  headers={"x-request-id": "trace-123"})
    assert r.headers["x-request-id"] == "trace-123"
    assert r.json()["id"] == "abc"


def test_the_request_id_comes_back_over_grpc(served_model: Any) -> None:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as stubs

    request = pb.ModelInferRequest(model_name="detector")
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    image = blank_jpeg()
    request.raw_input_contents.append(len(image).to_bytes(4, "little") + image)
    with grpc.insecure_channel(served_model.grpc_url) as channel:
        _, call = stubs.GRPCInferenceServiceStub(channel).ModelInfer.with_call(
            request, metadata=(("x-request-id", "trace-9"),), timeout=60)
    assert ("x-request-id", "trace-9") in list(call.trailing_metadata())
