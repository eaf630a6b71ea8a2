"""protocol.rest: V1 bodies decided by content, V2 JSON/binary bodies, V2 answers."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import numpy as np
import pytest

from predictor.protocol import OutputRequest, RequestError, V2Call
from predictor.protocol.rest import (
    HEADER_LENGTH,
    Inflater,
    encode_v2,
    looks_like_image,
    parse_v1_body,
    parse_v2_body,
)
from predictor.protocol.v2 import answer
from tests.support.answers import dets

# Bytes no UTF-8 round trip survives: KServe's own decoder corrupts these.
IMAGE_A = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x80\x81\xfe\xff\xc0"
IMAGE_B = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xde\xad\xbe\xef"
LIMITS = {"max_images": 8, "max_pixels": 10**6}


def bytes_tensor(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def binary_body(header: Any, *parts: bytes) -> tuple[bytes, str]:
    head = json.dumps(header).encode()
    return head + b"".join(parts), str(len(head))


def image_input(size: int, count: int = 2, **extra: Any) -> dict[str, Any]:
    return {"name": "image", "datatype": "BYTES", "shape": [count],
            "parameters": {"binary_data_size": size, **extra}}


def v2_json(**extra: Any) -> bytes:
    return json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                   "data": [base64.b64encode(IMAGE_A).decode()]}],
                       **extra}).encode()


# ---- V1: decided by content -----------------------------------------------------------

@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "Application/JSON",
    "text/plain;charset=UTF-8", "application/octet-stream", None, "image/jpeg"])
def test_v1_json_is_json_whatever_the_media_type_says(content_type):
    body = json.dumps({"instances": [{"b64": base64.b64encode(IMAGE_A).decode()}],
                       "parameters": {"classes": ["circle"]}}).encode()
    request = parse_v1_body(body, content_type, 8)
    assert request.sources == [IMAGE_A]
    assert request.parameters == {"classes": ["circle"]}
    assert request.v2 is None


@pytest.mark.parametrize("content_type", [
    "image/png", "application/octet-stream", "application/json", "text/plain", None])
def test_v1_image_file_is_an_image_whatever_the_media_type_says(content_type):
    assert parse_v1_body(IMAGE_B, content_type, 8).sources == [IMAGE_B]


def test_v1_json_with_a_utf8_bom_or_in_utf16_is_read():
    doc = {"instances": [{"b64": base64.b64encode(IMAGE_A).decode()}]}
    for body in (b"\xef\xbb\xbf" + json.dumps(doc).encode(), json.dumps(doc).encode("utf-16")):
        assert parse_v1_body(body, "application/json", 8).sources == [IMAGE_A]


@pytest.mark.parametrize(("body", "content_type", "message"), [
    (b"hello", "text/plain", r"neither JSON nor an image file \(content type text/plain, 5 bytes"),
    (b"\x00\x01binary", "application/octet-stream", "neither JSON nor an image file"),
    (b'{"instances": [', "application/json", r"not valid JSON \(.* line 1 column"),
    (b"", "application/json", "empty"),
    (b"[1, 2]", "application/json", 'must be a JSON object with "instances", got list'),
])
def test_v1_bodies_that_are_neither_say_so(body, content_type, message):
    with pytest.raises(RequestError, match=message):
        parse_v1_body(body, content_type, 8)


def test_image_signatures():
    for sig in (IMAGE_A, IMAGE_B, b"GIF89a...", b"BM....", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
                b"II*\x00tiff"):
        assert looks_like_image(sig), sig
    for other in (b"{}", b"RIFF\x00\x00\x00\x00WAVE", b"", b"hello"):
        assert not looks_like_image(other), other


# ---- V2: JSON and binary bodies --------------------------------------------------------

def test_binary_bytes_input_keeps_raw_image_bytes_intact():
    raw = bytes_tensor(IMAGE_A, IMAGE_B)
    body, length = binary_body(
        {"id": "req-1", "inputs": [image_input(len(raw))],
         "outputs": [{"name": "detection_boxes", "parameters": {"binary_data": True}}],
         "parameters": {"score_threshold": 0.3, "classes": ["circle", "star"]}}, raw)
    request = parse_v2_body(body, length, **LIMITS)
    assert request.sources == [IMAGE_A, IMAGE_B]
    assert request.parameters == {"score_threshold": 0.3, "classes": ["circle", "star"]}
    assert request.v2 == V2Call(id="req-1", outputs=(OutputRequest("detection_boxes", True),))


def test_the_image_input_takes_its_own_bytes_beside_another_binary_input():
    first, second = b"\x01\x02\x03", bytes_tensor(IMAGE_A)
    body, length = binary_body({"inputs": [
        {"name": "extra", "datatype": "UINT8", "shape": [3],
         "parameters": {"binary_data_size": len(first)}},
        image_input(len(second), count=1)]}, first, second)
    assert parse_v2_body(body, length, **LIMITS).sources == [IMAGE_A]


def test_json_body_needs_no_header_and_takes_list_parameters():
    request = parse_v2_body(v2_json(parameters={"classes": ["circle"], "binary_data_output": True}),
                            None, **LIMITS)
    assert request.sources == [IMAGE_A]
    assert request.parameters["classes"] == ["circle"]
    assert request.v2 is not None
    assert request.v2.binary_outputs is True


@pytest.mark.parametrize(("extra", "message"), [
    ({"id": 7}, r'"id" must be a string, got int 7'),
    ({"outputs": [{"name": "boxes"}]}, "unknown output 'boxes'; outputs are detection_boxes"),
    ({"outputs": [{"name": "num_detections", "parameters": {"binary_data": "yes"}}]},
     "binary_data must be true or false"),
    ({"parameters": {"binary_data_output": 1}}, "binary_data_output must be true or false"),
])
def test_v2_request_fields_are_checked_before_the_model_runs(extra, message):
    with pytest.raises(RequestError, match=message):
        parse_v2_body(v2_json(**extra), None, **LIMITS)


@pytest.mark.parametrize("length", ["0", "-1", "10000"])
def test_bad_header_length(length):
    raw = bytes_tensor(IMAGE_A)
    body, _ = binary_body({"inputs": [image_input(len(raw), count=1)]}, raw)
    with pytest.raises(RequestError, match=f"{HEADER_LENGTH} is {length}, but the body has"):
        parse_v2_body(body, length, **LIMITS)


def test_header_length_not_a_number():
    with pytest.raises(RequestError, match=f"{HEADER_LENGTH} must be an integer, got 'ten'"):
        parse_v2_body(v2_json(), "ten", **LIMITS)


def test_header_length_cutting_the_json_is_invalid_json():
    raw = bytes_tensor(IMAGE_A)
    body, length = binary_body({"inputs": [image_input(len(raw), count=1)]}, raw)
    with pytest.raises(RequestError, match="not valid JSON"):
        parse_v2_body(body, str(int(length) - 3), **LIMITS)


def test_binary_size_running_past_the_end():
    raw = bytes_tensor(IMAGE_A)
    body, length = binary_body({"inputs": [image_input(len(raw) + 5, count=1)]}, raw)
    with pytest.raises(RequestError, match=rf"inputs\[0\]: binary_data_size {len(raw) + 5} runs "
                                           rf"past the end of the body \({len(raw)} bytes left\)"):
        parse_v2_body(body, length, **LIMITS)


def test_leftover_bytes_are_refused():
    raw = bytes_tensor(IMAGE_A)
    body, length = binary_body({"inputs": [image_input(len(raw), count=1)]}, raw, b"junk")
    with pytest.raises(RequestError, match="the body has 4 bytes that no input claims"):
        parse_v2_body(body, length, **LIMITS)


@pytest.mark.parametrize(("header", "message"), [
    ({"inputs": [{"name": "image", "shape": [1], "parameters": {"binary_data_size": 0}}]},
     r"inputs\[0\] needs name, shape and datatype"),
    ({"inputs": [{"datatype": "BYTES", "shape": [1], "data": []}]}, "needs name"),
    ({"inputs": ["image"]}, r"inputs\[0\] needs name"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": ["1"], "data": []}]},
     "shape must be a list of integers"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [True], "data": []}]},
     "shape must be a list of integers"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1]}]},
     "has neither data nor binary_data_size"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                  "parameters": {"binary_data_size": -1}}]},
     "binary_data_size must be a non-negative integer"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                  "parameters": {"binary_data_size": "4"}}]},
     "binary_data_size must be a non-negative integer"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": [1]}]},
     "parameters must be an object"),
    ({"images": []}, 'needs an "inputs" list'),
    ([1, 2], 'needs an "inputs" list'),
    ({"inputs": [], "outputs": [{"binary_data": True}]}, '"outputs" must be a list'),
    ({"inputs": [], "parameters": "x"}, '"parameters" must be an object'),
])
def test_malformed_headers(header, message):
    body, length = binary_body(header)
    with pytest.raises(RequestError, match=message):
        parse_v2_body(body, length, **LIMITS)


def test_empty_and_non_utf8_bodies():
    with pytest.raises(RequestError, match="empty"):
        parse_v2_body(b"", None, **LIMITS)
    with pytest.raises(RequestError, match="not UTF-8|not valid JSON"):
        parse_v2_body(b'{"inputs": "\xff\xfe"}', None, **LIMITS)


# ---- V2 answers --------------------------------------------------------------------------

def test_json_answer_with_no_detections_is_valid_v2():
    body, media, json_length = encode_v2(answer(V2Call(id="a"), [dets(0), dets(0)]),
                                         "detector", "v7")
    assert (media, json_length) == ("application/json", 0)
    doc = json.loads(body)
    assert (doc["id"], doc["model_name"], doc["model_version"]) == ("a", "detector", "v7")
    shapes = {o["name"]: (o["shape"], o["data"]) for o in doc["outputs"]}
    assert shapes == {"detection_boxes": ([2, 0, 4], []), "detection_scores": ([2, 0], []),
                      "detection_classes": ([2, 0], []), "detection_labels": ([2, 0], []),
                      "num_detections": ([2], [0, 0])}


def test_json_answer_values_and_labels():
    body, _, _ = encode_v2(answer(V2Call(), [dets(2), dets(1)]), "m", "1")
    out = {o["name"]: o for o in json.loads(body)["outputs"]}
    assert out["detection_labels"]["data"] == ["name1", "name2", "name1", ""]
    assert out["detection_classes"]["data"] == [1, 2, 1, -1]
    assert out["num_detections"]["data"] == [2, 1]
    np.testing.assert_allclose(out["detection_boxes"]["data"][:4],
                               [10.123456, 20.987654, 100.005, 200.0], rtol=1e-6)


def test_binary_answer_holds_only_the_outputs_asked_in_their_order():
    call = V2Call(outputs=(OutputRequest("num_detections", True),
                           OutputRequest("detection_labels", True),
                           OutputRequest("detection_scores", False)))
    body, media, json_length = encode_v2(answer(call, [dets(2), dets(0)]), "m", "1")
    assert media == "application/octet-stream"
    header = json.loads(body[:json_length])
    assert [o["name"] for o in header["outputs"]] == [
        "num_detections", "detection_labels", "detection_scores"]
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"][:2]]
    blob = body[json_length:]
    assert len(blob) == sum(sizes)
    assert np.frombuffer(blob[:sizes[0]], "<i4").tolist() == [2, 0]
    assert blob[sizes[0]:] == bytes_tensor(b"name1", b"name2", b"", b"")
    assert len(header["outputs"][2]["data"]) == 4


# ---- Inflater --------------------------------------------------------------------------

def test_inflater_gzip_members_and_limits():
    import gzip

    two = gzip.compress(b"a" * 100) + gzip.compress(b"b" * 50)
    inflater = Inflater("gzip", 1000)
    assert inflater.feed(two) + inflater.finish() == b"a" * 100 + b"b" * 50
    assert not Inflater.supported("br")
