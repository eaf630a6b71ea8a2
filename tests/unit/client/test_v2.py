"""V2 REST wire format: binary request encoding, JSON and binary response decoding."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from client import DetectionClient, ServerError
from client._tensors import array_from_raw, pack_bytes, unpack_bytes

HEADER = "inference-header-content-length"


def png(width: int = 8, height: int = 6) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (0, 90, 200)).save(out, format="PNG")
    return out.getvalue()


def split_request(request: httpx.Request) -> tuple[dict[str, Any], bytes]:
    length = int(request.headers[HEADER])
    return json.loads(request.content[:length]), request.content[length:]


# Two images: the first with two detections, the second with none (padding row).
BOXES = np.array([[[1, 2, 30, 40], [5, 6, 7, 8]], [[0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
SCORES = np.array([[0.91, 0.62], [0, 0]], np.float32)
CLASSES = np.array([[1, 3], [-1, -1]], np.int32)
LABELS = [[b"circle", b"triangle"], [b"", b""]]
NUM = np.array([2, 0], np.int32)


def binary_response() -> httpx.Response:
    tensors = [
        ("detection_boxes", "FP32", [2, 2, 4], BOXES.tobytes()),
        ("detection_scores", "FP32", [2, 2], SCORES.tobytes()),
        ("detection_classes", "INT32", [2, 2], CLASSES.tobytes()),
        ("detection_labels", "BYTES", [2, 2], pack_bytes([x for row in LABELS for x in row])),
        ("num_detections", "INT32", [2], NUM.tobytes()),
    ]
    header = {"model_name": "detector", "outputs": [
        {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(raw)}}
        for n, d, s, raw in tensors]}
    head = json.dumps(header).encode()
    return httpx.Response(200, headers={HEADER: str(len(head))},
                          content=head + b"".join(raw for *_, raw in tensors))


def json_response() -> httpx.Response:
    return httpx.Response(200, json={"model_name": "detector", "outputs": [
        {"name": "detection_boxes", "datatype": "FP32", "shape": [2, 2, 4],
         "data": BOXES.reshape(-1).tolist()},
        {"name": "detection_scores", "datatype": "FP32", "shape": [2, 2],
         "data": SCORES.reshape(-1).tolist()},
        {"name": "detection_classes", "datatype": "INT32", "shape": [2, 2],
         "data": CLASSES.reshape(-1).tolist()},
        {"name": "detection_labels", "datatype": "BYTES", "shape": [2, 2],
         "data": ["circle", "triangle", "", ""]},
        {"name": "num_detections", "datatype": "INT32", "shape": [2], "data": [2, 0]},
    ]})


def client_for(handler: Any, **settings: Any) -> DetectionClient:
    return DetectionClient("http://127.0.0.1:8080", protocol="v2",
                           transport=httpx.MockTransport(handler), **settings)


def test_encoded_images_go_as_a_length_prefixed_bytes_tensor() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return binary_response()

    first, second = png(8, 6), png(4, 3)
    with client_for(handler) as client:
        client.detect([first, second], score_threshold=0.25, classes=["circle", "star"])
    request = seen[0]
    header, raw = split_request(request)
    assert request.url.path == "/v2/models/detector/infer"
    assert request.headers["content-type"] == "application/octet-stream"
    (tensor,) = header["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("image", "BYTES", [2])
    assert tensor["parameters"]["binary_data_size"] == len(raw)
    assert raw == struct.pack("<I", len(first)) + first + struct.pack("<I", len(second)) + second
    # V2 parameters hold scalars only, so the class list travels comma-joined.
    assert header["parameters"]["classes"] == "circle,star"
    assert header["parameters"]["score_threshold"] == 0.25
    assert header["parameters"]["binary_data_output"] is True


def test_same_shape_arrays_go_as_one_uint8_tensor() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return binary_response()

    pixels = np.random.default_rng(0).integers(0, 255, (2, 5, 7, 3), dtype=np.uint8)
    with client_for(handler) as client:
        results = client.detect(pixels)
    header, raw = split_request(seen[0])
    assert header["inputs"][0]["datatype"] == "UINT8"
    assert header["inputs"][0]["shape"] == [2, 5, 7, 3]
    assert np.array_equal(np.frombuffer(raw, np.uint8).reshape(2, 5, 7, 3), pixels)
    assert [r.image_size for r in results] == [(5, 7), (5, 7)]


def test_mixed_inputs_fall_back_to_encoded_bytes() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return binary_response()

    with client_for(handler) as client:
        client.detect([png(), np.zeros((4, 4, 3), np.uint8)])
    header, raw = split_request(seen[0])
    assert header["inputs"][0]["datatype"] == "BYTES"
    items = unpack_bytes(raw)
    assert Image.open(io.BytesIO(items[1])).size == (4, 4)


@pytest.mark.parametrize("response", [binary_response, json_response], ids=["binary", "json"])
def test_outputs_decode_to_detections_without_the_padding(response: Any) -> None:
    with client_for(lambda _r: response()) as client:
        first, second = client.detect([png(40, 30), png(10, 10)])
    assert [d.label for d in first.detections] == ["circle", "triangle"]
    assert first.detections[0].box == (1.0, 2.0, 30.0, 40.0)
    assert first.detections[0].score == pytest.approx(0.91)
    assert [d.label_id for d in first.detections] == [1, 3]
    assert first.image_size == (30, 40)
    assert second.detections == ()
    assert second.image_size == (10, 10)


def test_a_response_with_missing_or_misshapen_outputs_is_a_server_error() -> None:
    def missing(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"outputs": [
            {"name": "num_detections", "datatype": "INT32", "shape": [1], "data": [0]}]})

    with client_for(missing) as client, pytest.raises(ServerError, match="detection_boxes"):
        client.detect_one(png())
    # A two-image answer to a one-image request.
    with client_for(lambda _r: binary_response()) as client, \
            pytest.raises(ServerError, match="batch of 1"):
        client.detect_one(png())


def test_bytes_tensors_round_trip_and_reject_truncation() -> None:
    items = [b"", b"a", "ünïcode".encode(), bytes(range(256))]
    assert unpack_bytes(pack_bytes(items)) == items
    with pytest.raises(ServerError, match="truncated"):
        unpack_bytes(pack_bytes(items)[:-1])
    with pytest.raises(ServerError, match="12 bytes, not 16"):
        array_from_raw(b"\0" * 12, "FP32", [2, 2])
    table = array_from_raw(pack_bytes([b"x", b"y"]), "BYTES", [1, 2])
    assert table.tolist() == [[b"x", b"y"]]
