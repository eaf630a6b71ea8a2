"""protocol.grpc_v2: parameters (the spec's double_param too), requests and raw answers."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from predictor.protocol import OutputRequest, RequestError, V2Call
from predictor.protocol.grpc_v2 import encode_infer_response, parse_infer_request
from predictor.protocol.grpc_v2 import parameters as to_python
from predictor.protocol.v2 import answer
from tests.support.answers import dets


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def double_param(value: float) -> bytes:
    """InferParameter.double_param (field 4, fixed64) as the full protocol encodes it."""
    return bytes([4 << 3 | 1]) + struct.pack("<d", value)


def uint64_param(value: int) -> bytes:
    """InferParameter.uint64_param (field 5, varint)."""
    return bytes([5 << 3 | 0]) + varint(value)


def request_with_params(params: dict[str, bytes]) -> pb.ModelInferRequest:
    """A ModelInferRequest parsed from the bytes a full-protocol client would send."""
    field = pb.ModelInferRequest.DESCRIPTOR.fields_by_name["parameters"].number
    wire = b""
    for key, value in params.items():
        entry = (b"\x0a" + varint(len(key)) + key.encode()
                 + b"\x12" + varint(len(value)) + value)
        wire += varint(field << 3 | 2) + varint(len(entry)) + entry
    request = pb.ModelInferRequest()
    request.ParseFromString(wire)
    return request


def test_known_parameter_kinds():
    request = pb.ModelInferRequest()
    request.parameters["binary_data_output"].bool_param = True
    request.parameters["max_detections"].int64_param = 7
    request.parameters["classes"].string_param = "circle,star"
    request.parameters["score_threshold"].string_param = "0.4"
    assert to_python(request.parameters) == {
        "binary_data_output": True,
        "max_detections": 7,
        "classes": "circle,star",
        "score_threshold": "0.4",
    }


def test_false_and_zero_are_kept():
    request = pb.ModelInferRequest()
    request.parameters["flag"].bool_param = False
    request.parameters["count"].int64_param = 0
    assert to_python(request.parameters) == {"flag": False, "count": 0}


def test_double_param_from_unknown_field():
    param = pb.InferParameter()
    param.ParseFromString(double_param(0.25))
    assert param.WhichOneof("parameter_choice") is None  # kserve's proto lacks field 4
    assert to_python({"score_threshold": param}) == {"score_threshold": 0.25}


def test_double_and_uint64_inside_a_parsed_request():
    request = request_with_params({
        "score_threshold": double_param(0.375),
        "max_detections": uint64_param(300),
        "classes": b"\x1a\x06circle",  # string_param, field 3
    })
    assert to_python(request.parameters) == {
        "score_threshold": 0.375,
        "max_detections": 300,
        "classes": "circle",
    }


def test_empty_parameter_is_left_out():
    request = pb.ModelInferRequest()
    request.parameters["nothing"].CopyFrom(pb.InferParameter())
    assert to_python(request.parameters) == {}


@pytest.mark.parametrize("params", [None, {}])
def test_no_parameters(params):
    assert to_python(params) == {}


def test_plain_mapping_values_pass_through():
    assert to_python({"score_threshold": 0.3, "classes": ["a"]}) == {
        "score_threshold": 0.3, "classes": ["a"]}


# ---- requests and answers ---------------------------------------------------------------

def bytes_request(*files: bytes, raw: bool = True, **fields: object) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="detector", **fields)
    tensor = request.inputs.add(name="image", datatype="BYTES", shape=[len(files)])
    if raw:
        request.raw_input_contents.append(
            b"".join(struct.pack("<I", len(f)) + f for f in files))
    else:
        tensor.contents.bytes_contents.extend(files)
    return request


@pytest.mark.parametrize("raw", [True, False])
def test_request_bytes_raw_or_in_contents(raw):
    files = [b"\xff\xd8\xff first", b"\x89PNG second"]
    request = bytes_request(*files, raw=raw, id="r-1")
    request.outputs.add(name="num_detections")
    request.parameters["score_threshold"].string_param = "0.4"
    parsed = parse_infer_request(request, max_images=8, max_pixels=10**6)
    assert parsed.sources == files
    assert parsed.parameters == {"score_threshold": "0.4"}
    assert parsed.v2 == V2Call(id="r-1", outputs=(OutputRequest("num_detections"),),
                               binary_outputs=True)


def test_request_uint8_pixels_in_contents():
    request = pb.ModelInferRequest(model_name="detector")
    tensor = request.inputs.add(name="image", datatype="UINT8", shape=[1, 2, 2, 3])
    tensor.contents.uint_contents.extend(range(12))
    (pixels,) = parse_infer_request(request, max_images=8, max_pixels=10**6).sources
    assert pixels.shape == (2, 2, 3)
    assert pixels.reshape(-1).tolist() == list(range(12))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.outputs.add(name="boxes"), "unknown output 'boxes'"),
    (lambda r: r.raw_input_contents.append(b"x"), "has 1 inputs but 2 raw_input_contents"),
    (lambda r: r.inputs[0].contents.bytes_contents.append(b"x"),
     "both contents and raw_input_contents"),
])
def test_request_refusals(mutate, message):
    request = bytes_request(b"\xff\xd8\xff")
    mutate(request)
    with pytest.raises(RequestError, match=message):
        parse_infer_request(request, max_images=8, max_pixels=10**6)


def test_answer_is_raw_and_holds_only_what_was_asked():
    call = V2Call(id="r-9", outputs=(OutputRequest("detection_labels"),
                                     OutputRequest("num_detections")), binary_outputs=True)
    response = encode_infer_response(answer(call, [dets(2), dets(0)]), "detector", "v3")
    assert (response.id, response.model_name, response.model_version) == ("r-9", "detector", "v3")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("detection_labels", "BYTES", [2, 2]), ("num_detections", "INT32", [2])]
    labels, num = response.raw_output_contents
    assert np.frombuffer(num, "<i4").tolist() == [2, 0]
    assert labels == b"".join(struct.pack("<I", len(x)) + x for x in (b"name1", b"name2", b"", b""))


def test_answer_with_no_detection_has_empty_raw_tensors():
    response = encode_infer_response(answer(V2Call(), [dets(0)]), "detector", "v3")
    sizes = {o.name: (list(o.shape), len(raw))
             for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)}
    assert sizes["detection_boxes"] == ([1, 0, 4], 0)
    assert sizes["num_detections"] == ([1], 4)
