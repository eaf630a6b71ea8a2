"""grpc_params: InferParameter maps to values, including the spec's double_param."""

from __future__ import annotations

import struct

import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from predictor.grpc_params import to_python


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
