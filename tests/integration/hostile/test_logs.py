"""What a client's mistakes leave in the server log: one line each, never a traceback.

An operator reads the log for what went wrong on the server. Forty bad requests used to
write eighty tracebacks at ERROR; each must now be one INFO line naming the request id,
the route, the status and the reason, over REST and gRPC alike.
"""

from __future__ import annotations

import re
import time
from typing import Any

import grpc
import httpx
import pytest

from tests.support.hostile import GOOD, V1, V2, b64, grpc_request, post_json
from tests.support.servers import Server

pytestmark = pytest.mark.integration


def _lines_for(server: Server, request_id: str) -> list[str]:
    return [line for line in server.log().splitlines() if request_id in line]


def test_each_rest_client_error_is_one_info_line_without_traceback(
        http: httpx.Client, server: Server) -> None:
    cases: list[tuple[str, int, Any]] = [
        ("bad-base64", 400, lambda h: http.post(V1, json={"instances": [{"b64": "%%%"}]},
                                                headers=h)),
        ("not-an-image", 400, lambda h: http.post(
            V1, json={"instances": [{"b64": b64(b"x" * 64)}]}, headers=h)),
        ("no-inputs", 400, lambda h: http.post(V2, json={"inputs": []}, headers=h)),
        ("unknown-model", 404, lambda h: http.post("/v1/models/nope:predict",
                                                json={"instances": []}, headers=h)),
        ("unknown-route", 404, lambda h: http.get("/v3/nothing", headers=h)),
        ("wrong-method", 405, lambda h: http.get(V2, headers=h)),
        ("bad-encoding", 415, lambda h: http.post(V1, content=GOOD, headers={
            **h, "content-type": "image/png", "content-encoding": "br"})),
        ("bad-class", 400, lambda h: http.post(V1, json={
            "instances": [{"b64": b64(GOOD)}], "parameters": {"classes": ["apple"]}},
            headers=h)),
    ]
    for name, status, send in cases:
        request_id = f"logcheck-{name}-{time.monotonic_ns()}"
        r = send({"x-request-id": request_id})
        assert r.status_code == status, (name, r.text)
        error = r.json()["error"]
        time.sleep(0.05)
        lines = _lines_for(server, request_id)
        assert len(lines) == 1, (name, lines)
        line = lines[0]
        assert " INFO " in line, line
        assert f"-> {status}: " in line, line
        assert error[:60] in line, (error, line)
    assert "Traceback" not in server.log()
    assert not re.search(r" ERROR .*Exception:", server.log())


def test_each_grpc_client_error_is_one_info_line_without_traceback(
        stub: Any, server: Server) -> None:
    cases = [
        ("grpc-no-input", grpc.StatusCode.INVALID_ARGUMENT, grpc_request(shape=(0,), raw=[])),
        ("grpc-bad-image", grpc.StatusCode.INVALID_ARGUMENT,
         grpc_request(raw=[len(b"junk").to_bytes(4, "little") + b"junk"])),
    ]
    unknown = grpc_request()
    unknown.model_name = "nope"
    cases.append(("grpc-unknown-model", grpc.StatusCode.NOT_FOUND, unknown))
    for name, code, request in cases:
        request_id = f"logcheck-{name}-{time.monotonic_ns()}"
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, metadata=(("x-request-id", request_id),), timeout=30)
        assert info.value.code() == code, (name, info.value.details())
        time.sleep(0.05)
        lines = _lines_for(server, request_id)
        assert len(lines) == 1, (name, lines)
        assert " INFO " in lines[0], lines[0]
        assert f"-> {code.name}: " in lines[0], lines[0]
    assert "Traceback" not in server.log()


def test_good_requests_leave_no_refusal_line(http: httpx.Client, server: Server) -> None:
    request_id = f"logcheck-good-{time.monotonic_ns()}"
    r = post_json(http, V1, {"instances": [{"b64": b64(GOOD)}]})
    assert r.status_code == 200
    r = http.post(V1, json={"instances": [{"b64": b64(GOOD)}]},
                  headers={"x-request-id": request_id})
    assert r.status_code == 200
    assert not [ln for ln in _lines_for(server, request_id) if "->" in ln]
