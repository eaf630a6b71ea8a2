"""SIGTERM while requests are in flight: they finish, new ones are refused, exit code 0.

This is what a Kubernetes rollout does to a pod: SIGTERM, then SIGKILL after the grace
period. A request already accepted must still get its answer.
"""

from __future__ import annotations

import base64
import io
import json
import re
import signal
import struct
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from PIL import Image

from tests.support.servers import start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

V1 = "/v1/models/detector:predict"
GRACE_S = 30
IMAGES_PER_REQUEST = 4


def picture(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (200 + i, 150 + i), (i * 9 % 256, 120, 60)).save(buf, "PNG")
    return buf.getvalue()


def queue_depth(http_url: str) -> float:
    text = httpx.get(f"{http_url}/metrics", timeout=5).text
    match = re.search(r"^detector_queue_depth (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def grpc_request(images: list[bytes]) -> Any:
    req = pb.ModelInferRequest(model_name="detector")
    tensor = req.inputs.add()
    tensor.name, tensor.datatype = "image", "BYTES"
    tensor.shape.append(len(images))
    req.raw_input_contents.append(b"".join(struct.pack("<I", len(x)) + x for x in images))
    return req


def test_sigterm_finishes_in_flight_requests_and_exits_0(
        tmp_path: Path, random_model_dir: Path) -> None:
    # A long batching window keeps the requests queued for seconds whatever the CPU's
    # speed, so SIGTERM surely lands while they are in flight. One worker: with an idle
    # second one the batcher would not wait for the window.
    server = start_server(tmp_path, random_model_dir, "--grace_period", str(GRACE_S),
                          "--max_batch_size", "64", "--max_batch_delay_ms", "3000",
                          "--inference_workers", "1")
    try:
        rest_answers: dict[int, httpx.Response | Exception] = {}
        grpc_answers: dict[int, Any] = {}
        channel = grpc.insecure_channel(server.grpc_url)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def rest_call(k: int) -> None:
            images = [picture(10 * k + j) for j in range(IMAGES_PER_REQUEST)]
            body = {"instances": [{"b64": base64.b64encode(x).decode()} for x in images]}
            try:
                rest_answers[k] = httpx.post(f"{server.http_url}{V1}", json=body, timeout=120)
            except httpx.HTTPError as exc:
                rest_answers[k] = exc

        def grpc_call(k: int) -> None:
            try:
                grpc_answers[k] = stub.ModelInfer(grpc_request([picture(100 + k)] * 2),
                                                  timeout=120)
            except grpc.RpcError as err:
                grpc_answers[k] = err

        threads = [threading.Thread(target=rest_call, args=(k,)) for k in range(3)]
        threads += [threading.Thread(target=grpc_call, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while queue_depth(server.http_url) < 16:  # wait until all 16 images are queued
            assert time.monotonic() < deadline, "the requests never reached the queue"
            time.sleep(0.05)

        server.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        time.sleep(0.5)  # uvicorn notices the signal within its 0.1 s tick
        in_flight_left = sum(t.is_alive() for t in threads)
        refused: list[str] = []
        with httpx.Client(timeout=10) as fresh:
            try:
                r = fresh.post(f"{server.http_url}{V1}",
                               json={"instances": [{"b64": base64.b64encode(picture(1)).decode()}]})
                refused.append(str(r.status_code))
            except httpx.ConnectError:
                refused.append("connection refused")
        try:
            stub.ModelInfer(grpc_request([picture(2)]), timeout=30)
            grpc_new = "OK"
        except grpc.RpcError as err:
            grpc_new = err.code().name

        for t in threads:
            t.join(GRACE_S + 30)
        code = server.proc.wait(GRACE_S + 30)
        took = time.monotonic() - sent
        channel.close()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)

    print(f"\n[shutdown] {in_flight_left} of {len(threads)} requests still in flight 0.5 s "
          f"after SIGTERM; a new request got: {refused}, a new gRPC request: {grpc_new}; "
          f"exit code {code} after {took:.1f} s")
    assert in_flight_left >= 1, "nothing was in flight at SIGTERM; the test proves nothing"
    for k, answer in rest_answers.items():
        assert isinstance(answer, httpx.Response), f"REST request {k}: {answer!r}"
        assert answer.status_code == 200, answer.text
        sizes = [p["image_size"] for p in answer.json()["predictions"]]
        assert sizes == [[150 + 10 * k + j, 200 + 10 * k + j] for j in range(IMAGES_PER_REQUEST)]
    assert len(rest_answers) == 3
    for k, answer in grpc_answers.items():
        assert not isinstance(answer, grpc.RpcError), f"gRPC request {k}: {answer}"
        outputs = {o.name: o for o in answer.outputs}
        assert list(outputs["num_detections"].shape) == [2]
    assert len(grpc_answers) == 2
    assert refused in (["connection refused"], ["503"]), refused
    assert code == 0, server.log()[-3000:]
    assert took < GRACE_S, f"exit took {took:.1f} s; the grace period is {GRACE_S} s"
    assert "Traceback" not in server.log()
    assert grpc_new == "UNAVAILABLE"


def test_a_request_still_uploading_at_sigterm_is_served(tmp_path: Path,
                                                       random_model_dir: Path) -> None:
    """Its connection was accepted before SIGTERM, so it is in flight: answered, not 503."""
    server = start_server(tmp_path, random_model_dir, "--grace_period", str(GRACE_S))
    body = json.dumps({"instances": [{"b64": base64.b64encode(picture(7)).decode()}]}).encode()
    first_sent = threading.Event()

    def slow_body() -> Any:
        yield body[:100]
        first_sent.set()
        time.sleep(1.5)  # SIGTERM lands here, while the body is still arriving
        yield body[100:]

    answer: dict[str, Any] = {}

    def send() -> None:
        try:
            answer["r"] = httpx.post(f"{server.http_url}{V1}", content=slow_body(), timeout=60,
                                     headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            answer["r"] = exc

    try:
        sender = threading.Thread(target=send)
        sender.start()
        assert first_sent.wait(30)
        time.sleep(0.2)
        server.proc.send_signal(signal.SIGTERM)
        sender.join(60)
        code = server.proc.wait(GRACE_S + 30)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)
    response = answer["r"]
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1
    assert code == 0
