"""Hostile V2 requests (JSON, binary extension, gRPC): each a 4xx / INVALID_ARGUMENT naming it."""

from __future__ import annotations

import json
from typing import Any

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from tests.support.hostile import (
    GOOD,
    V2,
    assert_ready,
    b64,
    bytes_input,
    check_error,
    grpc_error,
    grpc_request,
    post_json,
    prefixed,
    v2_binary,
    v2_body,
)
from tests.support.servers import Server

pytestmark = pytest.mark.integration



# ---- V2 JSON and binary -------------------------------------------------------------
V2_CASES: list[tuple[str, Any, tuple[str, ...]]] = [
    ("no inputs", {}, ("inputs",)),
    ("inputs is a string", {"inputs": "image"}, ("inputs",)),
    ("input is a number", {"inputs": [3]}, ("inputs",)),
    ("FP32 datatype", v2_body("FP32", [1, 2, 2, 3], [0.5] * 12), ("FP32", "BYTES", "UINT8")),
    ("unknown datatype", v2_body("PIXELS", [1], [b64(GOOD)]), ("PIXELS",)),
    ("shape is text", v2_body("BYTES", ["one"], [b64(GOOD)]), ("shape",)),
    ("negative shape", v2_body("BYTES", [-1], [b64(GOOD)]), ("negative",)),
    ("shape and data disagree", v2_body("BYTES", [3], [b64(GOOD)]), ("shape says 3",)),
    ("BYTES of rank 3", v2_body("BYTES", [1, 1, 1], [b64(GOOD)]), ("expected [B]",)),
    ("BYTES data is numbers", v2_body("BYTES", [1], [12345]), ("base64",)),
    ("BYTES data is not an image", v2_body("BYTES", [1], [b64(b"nope nope")]), ("not an image",)),
    ("data is an object", v2_body("BYTES", [1], {"a": 1}), ("data",)),
    ("UINT8 without channels", v2_body("UINT8", [1, 2, 2], [0] * 4), ("[B, H, W, 3]",)),
    ("UINT8 too few values", v2_body("UINT8", [1, 2, 2, 3], [0] * 5), ("needs 12",)),
    ("UINT8 floats in 0..1", v2_body("UINT8", [1, 1, 1, 3], [0.5, 0.1, 0.9]), ("integers",)),
    ("UINT8 above 255", v2_body("UINT8", [1, 1, 1, 3], [256, 0, 0]), ("between 0 and 255",)),
    ("UINT8 negative", v2_body("UINT8", [1, 1, 1, 3], [-1, 0, 0]), ("between 0 and 255",)),
    ("UINT8 strings", v2_body("UINT8", [1, 1, 1, 3], ["a", "b", "c"]), ("integers",)),
    ("UINT8 zero height", v2_body("UINT8", [1, 0, 4, 3], []), ("zero size",)),
    ("UINT8 huge shape", v2_body("UINT8", [1, 10**9, 10**9, 3], [0]), ("--max_image_pixels",)),
    ("two unnamed inputs", {"inputs": [
        {"name": "a", "shape": [1], "datatype": "BYTES", "data": [b64(GOOD)]},
        {"name": "b", "shape": [1], "datatype": "BYTES", "data": [b64(GOOD)]}]},
     ("one input named 'image'",)),
    ("parameters is a string", v2_body("BYTES", [1], [b64(GOOD)], parameters="fast"),
     ("parameters",)),
    ("NaN threshold", v2_body("BYTES", [1], [b64(GOOD)],
                          parameters={"score_threshold": float("nan")}), ()),
    ("unknown output", v2_body("BYTES", [1], [b64(GOOD)], outputs=[{"name": "masks"}]),
     ("masks",)),
]


@pytest.mark.parametrize(("body", "fragments"), [(b, f) for _, b, f in V2_CASES],
                         ids=[c[0] for c in V2_CASES])
def test_v2_bad_json_is_a_400_naming_the_problem(http: httpx.Client, body: Any,
                                                 fragments: tuple[str, ...]) -> None:
    check_error(post_json(http, V2, body), 400, *fragments)


def test_v2_binary_framing_errors_are_400s(http: httpx.Client, server: Server) -> None:
    blob = prefixed(GOOD)
    head = bytes_input(1, blob)
    check_error(v2_binary(http, head, blob, json_length=10**6), 400, "inference-header")
    check_error(v2_binary(http, head, blob, json_length=0), 400, "inference-header")
    r = http.post(V2, content=json.dumps(head).encode() + blob,
                  headers={"content-type": "application/octet-stream",
                           "inference-header-content-length": "twelve"})
    check_error(r, 400, "must be an integer")
    check_error(v2_binary(http, head, blob + b"extra"), 400, "no input claims")
    check_error(v2_binary(http, head, blob[:-10]), 400, "binary_data_size")
    check_error(v2_binary(http, bytes_input(1, b"\xff\xff\xff\x7fab"), b"\xff\xff\xff\x7fab"),
                400, "declares")
    check_error(v2_binary(http, bytes_input(1, b"\x01\x00"), b"\x01\x00"), 400,
                "length prefix")
    check_error(v2_binary(http, bytes_input(2, blob), blob), 400, "shape says 2")
    bad_size = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                            "parameters": {"binary_data_size": -4}}]}
    check_error(v2_binary(http, bad_size, b""), 400, "binary_data_size")
    no_data = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES"}]}
    check_error(v2_binary(http, no_data, b""), 400, "neither data nor binary_data_size")
    uint8 = {"inputs": [{"name": "image", "shape": [1, 4, 4, 3], "datatype": "UINT8",
                         "parameters": {"binary_data_size": 10}}]}
    check_error(v2_binary(http, uint8, b"\0" * 10), 400, "needs 48")
    assert_ready(server)


# ---- gRPC ---------------------------------------------------------------------------
def test_grpc_bad_requests_are_invalid_argument(stub: Any, server: Server) -> None:
    param = pb.InferParameter
    cases: list[tuple[Any, str]] = [
        (grpc_request(raw=[prefixed(b"garbage")]), "not an image"),
        (grpc_request(raw=[b""]), "shape says 1"),
        (grpc_request(raw=[b"\xff\xff\xff\xffab"]), "declares"),
        (grpc_request(shape=(2,), raw=[prefixed(GOOD)]), "shape says 2"),
        (grpc_request(), "shape says 1"),
        (grpc_request("FP32", contents=pb.InferTensorContents(fp32_contents=[1.0])), "FP32"),
        (grpc_request("UINT8", (1, 2, 2, 3), raw=[b"\0" * 5]), "needs 12"),
        (grpc_request("UINT8", (1, 1, 1, 3),
                      contents=pb.InferTensorContents(uint_contents=[1, 2, 999])), "255"),
        (grpc_request("UINT8", (7, 7, 3), raw=[b"\0" * 147]), "[B, H, W, 3]"),
        (grpc_request(shape=(-1,), raw=[prefixed(GOOD)]), "negative"),
        (grpc_request(contents=pb.InferTensorContents(bytes_contents=[b"junk"])),
         "not an image"),
        (grpc_request(raw=[prefixed(GOOD)], params={"score_threshold": param(string_param="x")}),
         "score_threshold"),
        (grpc_request(raw=[prefixed(GOOD)],
                      params={"score_threshold": param(string_param="nan")}), "score_threshold"),
        (grpc_request(raw=[prefixed(GOOD)], params={"score_threshold": param(int64_param=-5)}),
         "score_threshold"),
        (grpc_request(raw=[prefixed(GOOD)], params={"score_threshold": param(bool_param=True)}),
         "score_threshold"),
        (grpc_request(raw=[prefixed(GOOD)],
                      params={"max_detections": param(int64_param=-(2**62))}), "max_detections"),
        (grpc_request(raw=[prefixed(GOOD)], params={"classes": param(string_param="cat,dog")}),
         "cat"),
        (pb.ModelInferRequest(model_name="detector"), "one input named 'image'"),
    ]
    for request, fragment in cases:
        err = grpc_error(stub, request)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (fragment, err.details())
        assert fragment.lower() in (err.details() or "").lower(), (fragment, err.details())
    missing = pb.ModelInferRequest(model_name="no-such-model")
    assert grpc_error(stub, missing).code() == grpc.StatusCode.NOT_FOUND
    assert_ready(server)
