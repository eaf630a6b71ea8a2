"""Arbitrary structures and bytes in every request form (hypothesis): never a 5xx or a leak.

Each test fuzzes one request form, then checks on its own that the server still answers
a good request and logged no 500: no test relies on another having run first.
"""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.hostile import (
    FUZZ,
    GOOD,
    V1,
    V2,
    assert_clean,
    assert_ready,
    b64,
    bytes_input,
    grpc_request,
    note,
    post_json,
    post_raw,
    prefixed,
    v2_binary,
    v2_body,
)
from tests.support.servers import Server

pytestmark = pytest.mark.integration


# ---- property-based: arbitrary structures -------------------------------------------
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)


def assert_still_serving(http: httpx.Client, server: Server) -> None:
    """After a fuzz run: ready, a good request answered, and no 500 in the server's log."""
    assert_ready(server)
    r = http.post(V1, json={"instances": [{"b64": b64(GOOD)}]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["image_size"] == [30, 40]
    assert "Traceback" not in r.text
    # Nothing the fuzzing sent may have become a 500, even one the client never saw.
    assert '" 500' not in server.log()


def _hypothesis_error(r: httpx.Response) -> None:
    assert r.status_code < 500, f"{r.status_code}: {r.text[:500]}"
    assert_clean(r.text)
    if r.status_code != 200:
        assert r.status_code in (400, 413), r.text
        assert len(r.json()["error"]) > 10


def test_fuzz_v1_instances(http: httpx.Client, server: Server) -> None:
    @FUZZ
    @given(instances=json_values)
    def fuzz(instances: Any) -> None:
        r = post_json(http, V1, {"instances": instances})
        _hypothesis_error(r)
        assert r.status_code == 400, r.text

    fuzz()
    assert_still_serving(http, server)


def test_fuzz_v1_parameters(http: httpx.Client, server: Server) -> None:
    @settings(FUZZ, max_examples=30)
    @given(parameters=json_values | st.fixed_dictionaries({}, optional={
        "score_threshold": json_values, "max_detections": json_values, "classes": json_values}))
    def fuzz(parameters: Any) -> None:
        r = post_json(http, V1, {"instances": [{"b64": b64(GOOD)}], "parameters": parameters})
        _hypothesis_error(r)  # 200 when the parameters happen to be valid (or ignored)

    fuzz()
    assert_still_serving(http, server)


def test_fuzz_v2_json(http: httpx.Client, server: Server) -> None:
    @FUZZ
    @given(inputs=json_values, name=st.sampled_from(["image", "x", ""]),
           datatype=st.sampled_from(["BYTES", "UINT8", "FP32", "INT64", "BOOL", "bytes", ""]),
           shape=st.lists(st.integers(-3, 2**40), max_size=5), data=json_values,
           whole=st.booleans())
    def fuzz(inputs: Any, name: str, datatype: str, shape: list[int], data: Any,
             whole: bool) -> None:
        if whole:
            body = {"inputs": inputs}
        else:
            body = {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}
        _hypothesis_error(post_json(http, V2, body))  # [1, 1, 1, 3] UINT8 of 3 ints is valid


    fuzz()
    assert_still_serving(http, server)


image_bytes = st.binary(max_size=3000) | st.builds(
    lambda pos, junk: GOOD[:pos] + junk + GOOD[pos + len(junk):],
    st.integers(0, len(GOOD)), st.binary(min_size=1, max_size=16))


def test_fuzz_image_bytes_over_rest(http: httpx.Client, server: Server) -> None:
    @FUZZ
    @given(data=image_bytes, route=st.sampled_from(["raw", "v1", "v2json", "v2binary"]))
    def fuzz(data: bytes, route: str) -> None:
        if route == "raw":
            r = post_raw(http, data, "image/png")
        elif route == "v1":
            r = post_json(http, V1, {"instances": [{"image_bytes": {"b64": b64(data)}}]})
        elif route == "v2json":
            r = post_json(http, V2, v2_body("BYTES", [1], [b64(data)]))
        else:
            r = v2_binary(http, bytes_input(1, prefixed(data)), prefixed(data))
        _hypothesis_error(r)  # a few flipped bytes may still decode: 200 is fine then

    fuzz()
    assert_still_serving(http, server)


def test_fuzz_grpc_tensors(stub: Any, http: httpx.Client, server: Server) -> None:
    @FUZZ
    @given(datatype=st.sampled_from(["BYTES", "UINT8", "FP32", "INT8", "", "BYTES\0"]),
           shape=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5),
           raw=st.lists(st.binary(max_size=600), max_size=3))
    def fuzz(datatype: str, shape: list[int], raw: list[bytes]) -> None:
        request = grpc_request(datatype, tuple(shape), raw=raw)
        note("grpc", request.SerializeToString())
        err: grpc.RpcError | None = None
        try:
            stub.ModelInfer(request, timeout=60)
        except grpc.RpcError as exc:
            err = exc
        if err is not None:  # valid by chance (one small image) is fine
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
            assert_clean(err.details() or "")
            assert len(err.details() or "") > 10


    fuzz()
    assert_still_serving(http, server)
