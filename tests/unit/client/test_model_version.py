"""The model version that answered reaches ``ImageResult.model_version`` on every wire.

V1 names it in the ``x-model-version`` header, V2 REST in the body's ``model_version``
(the header too), gRPC in ``ModelInferResponse.model_version``; a server that names none
gives None, never ``""``.
"""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from client import DetectionClient, ImageResult
from client._grpc import GrpcCodec, pb
from client._images import prepare
from client._tensors import pack_bytes

HEADER = "inference-header-content-length"


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 6), (0, 90, 200)).save(out, format="PNG")
    return out.getvalue()


def v1_response(headers: dict[str, str]) -> httpx.Response:
    return httpx.Response(200, headers=headers, json={"predictions": [{
        "detections": [{"box": [1, 2, 3, 4], "score": 0.9, "label": "star", "label_id": 4}],
        "image_size": [6, 8]}]})


TENSORS = [
    ("detection_boxes", "FP32", [1, 1, 4], np.array([1, 2, 3, 4], np.float32).tobytes()),
    ("detection_scores", "FP32", [1, 1], np.array([0.9], np.float32).tobytes()),
    ("detection_classes", "INT32", [1, 1], np.array([4], np.int32).tobytes()),
    ("detection_labels", "BYTES", [1, 1], pack_bytes([b"star"])),
    ("num_detections", "INT32", [1], np.array([1], np.int32).tobytes()),
]


def v2_binary_response(version: str | None, headers: dict[str, str]) -> httpx.Response:
    header: dict[str, Any] = {"model_name": "detector", "outputs": [
        {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(raw)}}
        for n, d, s, raw in TENSORS]}
    if version is not None:
        header["model_version"] = version
    head = json.dumps(header).encode()
    return httpx.Response(200, headers={HEADER: str(len(head)), **headers},
                          content=head + b"".join(raw for *_, raw in TENSORS))


def v2_json_response(version: str | None) -> httpx.Response:
    body: dict[str, Any] = {"model_name": "detector", "outputs": [
        {"name": "detection_boxes", "datatype": "FP32", "shape": [1, 1, 4], "data": [1, 2, 3, 4]},
        {"name": "detection_scores", "datatype": "FP32", "shape": [1, 1], "data": [0.9]},
        {"name": "detection_classes", "datatype": "INT32", "shape": [1, 1], "data": [4]},
        {"name": "detection_labels", "datatype": "BYTES", "shape": [1, 1], "data": ["star"]},
        {"name": "num_detections", "datatype": "INT32", "shape": [1], "data": [1]},
    ]}
    if version is not None:
        body["model_version"] = version
    return httpx.Response(200, json=body)


def detect(protocol: str, response: httpx.Response) -> ImageResult:
    with DetectionClient("http://model.test:8080", protocol=protocol,  # type: ignore[arg-type]
                         transport=httpx.MockTransport(lambda _r: response)) as client:
        result = client.detect_one(png())
    assert [d.label for d in result.detections] == ["star"]  # the answer itself still reads
    return result


@pytest.mark.parametrize(("headers", "expected"), [
    ({"x-model-version": "3"}, "3"),
    ({"X-Model-Version": "2026-11-28.1"}, "2026-11-28.1"),
    ({}, None),
    ({"x-model-version": ""}, None),
])
def test_v1_reads_the_header(headers: dict[str, str], expected: str | None) -> None:
    assert detect("v1", v1_response(headers)).model_version == expected


@pytest.mark.parametrize(("version", "headers", "expected"), [
    ("7", {}, "7"),
    # The body's field wins over the header; the header fills in when the body has none.
    ("7", {"x-model-version": "6"}, "7"),
    (None, {"x-model-version": "6"}, "6"),
    (None, {}, None),
    ("", {}, None),
])
def test_v2_binary_reads_the_body_field(version: str | None, headers: dict[str, str],
                                        expected: str | None) -> None:
    assert detect("v2", v2_binary_response(version, headers)).model_version == expected


@pytest.mark.parametrize(("version", "expected"), [("1", "1"), (None, None)])
def test_v2_json_reads_the_body_field(version: str | None, expected: str | None) -> None:
    assert detect("v2", v2_json_response(version)).model_version == expected


def grpc_response(version: str) -> Any:
    response = pb.ModelInferResponse(model_name="detector", model_version=version)
    for name, datatype, shape, raw in TENSORS:
        response.outputs.add(name=name, datatype=datatype, shape=shape)
        response.raw_output_contents.append(raw)
    return response


@pytest.mark.parametrize(("version", "expected"), [("5", "5"), ("", None)])
def test_grpc_reads_the_response_field(version: str, expected: str | None) -> None:
    (result,) = GrpcCodec("detector").infer_results(grpc_response(version), [prepare(png())])
    assert result.detections[0].label == "star"
    assert result.model_version == expected


def test_a_result_made_by_hand_has_no_version() -> None:
    assert ImageResult(detections=(), image_size=(1, 1)).model_version is None
