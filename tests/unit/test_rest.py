"""rest: the V2 binary-extension decoder and the RequestGuard ASGI middleware."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import pytest
from kserve.errors import InvalidInput

from predictor.payload import parse_v2_input
from predictor.rest import HEADER_LENGTH, RequestGuard, decode_binary_request

# Bytes no UTF-8 round trip survives: KServe's own decoder corrupts these.
IMAGE_A = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x80\x81\xfe\xff\xc0"
IMAGE_B = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xde\xad\xbe\xef"


def bytes_tensor(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def binary_body(header: dict[str, Any], *parts: bytes) -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + b"".join(parts), len(head)


def image_input(size: int, count: int = 2, **extra: Any) -> dict[str, Any]:
    return {"name": "image", "datatype": "BYTES", "shape": [count],
            "parameters": {"binary_data_size": size, **extra}}


# ---- decode_binary_request ---------------------------------------------------------

def test_bytes_input_keeps_raw_image_bytes_intact():
    raw = bytes_tensor(IMAGE_A, IMAGE_B)
    body, length = binary_body(
        {"id": "req-1", "inputs": [image_input(len(raw))],
         "outputs": [{"name": "detection_boxes", "parameters": {"binary_data": True}}],
         "parameters": {"score_threshold": 0.3}}, raw)
    request = decode_binary_request(body, length, "detector")
    assert request.model_name == "detector"
    assert request.id == "req-1"
    assert request.parameters == {"score_threshold": 0.3}
    assert [o.name for o in request.request_outputs] == ["detection_boxes"]
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("image", "BYTES", [2])
    assert tensor._raw_data == raw
    files = parse_v2_input(tensor.name, tensor.datatype, tensor.shape, tensor.data,
                           tensor._raw_data, 8, 10**6)
    assert files == [IMAGE_A, IMAGE_B]


def test_two_binary_inputs_take_their_own_bytes_in_order():
    first, second = bytes_tensor(IMAGE_A), b"\x01\x02\x03"
    body, length = binary_body({"inputs": [
        image_input(len(first), count=1),
        {"name": "extra", "datatype": "UINT8", "shape": [3],
         "parameters": {"binary_data_size": len(second)}},
    ]}, first, second)
    request = decode_binary_request(body, length, "m")
    assert request.inputs[0]._raw_data == first
    assert request.inputs[1]._raw_data == second


def test_json_data_inputs_without_binary_part():
    body, length = binary_body({"inputs": [
        {"name": "image", "datatype": "UINT8", "shape": [1, 1, 1, 3], "data": [1, 2, 3]}]})
    request = decode_binary_request(body, length, "m")
    assert request.inputs[0].data == [1, 2, 3]


@pytest.mark.parametrize("length", [0, -1, 10_000])
def test_bad_header_length(length):
    raw = bytes_tensor(IMAGE_A)
    body, _ = binary_body({"inputs": [image_input(len(raw), count=1)]}, raw)
    with pytest.raises(InvalidInput, match=f"{HEADER_LENGTH} is {length}, but the body has"):
        decode_binary_request(body, length, "m")


def test_header_length_cutting_the_json_is_invalid_json():
    raw = bytes_tensor(IMAGE_A)
    body, length = binary_body({"inputs": [image_input(len(raw), count=1)]}, raw)
    with pytest.raises(InvalidInput, match="not valid JSON"):
        decode_binary_request(body, length - 3, "m")


def test_binary_size_running_past_the_end():
    raw = bytes_tensor(IMAGE_A)
    body, length = binary_body({"inputs": [image_input(len(raw) + 5, count=1)]}, raw)
    with pytest.raises(InvalidInput, match=rf"inputs\[0\]: binary_data_size {len(raw) + 5} runs "
                                           rf"past the end of the body \({len(raw)} bytes left\)"):
        decode_binary_request(body, length, "m")


def test_leftover_bytes_are_refused():
    raw = bytes_tensor(IMAGE_A)
    body, length = binary_body({"inputs": [image_input(len(raw), count=1)]}, raw, b"junk")
    with pytest.raises(InvalidInput, match="the body has 4 bytes that no input claims"):
        decode_binary_request(body, length, "m")


@pytest.mark.parametrize(("header", "message"), [
    ({"inputs": [{"name": "image", "shape": [1],
                  "parameters": {"binary_data_size": 0}}]},
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
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                  "parameters": [1]}]}, "parameters must be an object"),
    ({"images": []}, 'needs an "inputs" list'),
    ([1, 2], 'needs an "inputs" list'),
    ({"inputs": [], "outputs": [{"binary_data": True}]}, '"outputs" must be a list'),
    ({"inputs": [], "parameters": "x"}, '"parameters" must be an object'),
])
def test_malformed_headers(header, message):
    body, length = binary_body(header)
    with pytest.raises(InvalidInput, match=message):
        decode_binary_request(body, length, "m")


def test_empty_body():
    with pytest.raises(InvalidInput, match="empty request body"):
        decode_binary_request(b"", 0, "m")


def test_non_utf8_json_part():
    body = b'{"inputs": "\xff\xfe"}'
    with pytest.raises(InvalidInput, match="not valid JSON"):
        decode_binary_request(body, len(body), "m")


# ---- RequestGuard ------------------------------------------------------------------

class Client:
    """Hand-made ASGI receive/send for one request."""

    def __init__(self, chunks: list[bytes], disconnect_after: float | None = None) -> None:
        self.chunks = list(chunks)
        self.disconnect_after = disconnect_after
        self.sent: list[dict[str, Any]] = []
        self.receives = 0

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        if self.chunks:
            chunk = self.chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}
        if self.disconnect_after is None:
            await asyncio.Event().wait()  # the client stays connected
        await asyncio.sleep(self.disconnect_after)
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


class EchoApp:
    """Reads the whole body the ASGI way and answers with its length."""

    def __init__(self) -> None:
        self.calls = 0
        self.bodies: list[bytes] = []
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            self.messages.append(message)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        answer = json.dumps({"length": len(body)}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": answer})


def scope(content_length: int | None = None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    return {"type": "http", "method": "POST", "path": "/v2/models/m/infer", "headers": headers}


def serve(guard: RequestGuard, client: Client, scope_: dict[str, Any]) -> None:
    asyncio.run(asyncio.wait_for(guard(scope_, client.receive, client.send), 5))


def test_declared_content_length_over_the_limit_is_413_before_reading():
    app, client = EchoApp(), Client([b"x" * 200])
    serve(RequestGuard(app, max_body_bytes=100), client, scope(200))
    assert client.status == 413
    error = json.loads(client.body)["error"]
    assert "200 bytes" in error
    assert "the limit is 100 bytes (--max_body_bytes)" in error
    assert app.calls == 0
    assert client.receives == 0


def test_chunked_body_over_the_limit_is_413():
    app, client = EchoApp(), Client([b"x" * 60, b"y" * 60, b"z" * 60])
    serve(RequestGuard(app, max_body_bytes=100), client, scope())
    assert client.status == 413
    assert "--max_body_bytes" in json.loads(client.body)["error"]
    assert app.calls == 0
    assert client.receives == 2  # stopped reading once past the limit


def test_lying_content_length_is_still_caught():
    app, client = EchoApp(), Client([b"x" * 80, b"y" * 80])
    serve(RequestGuard(app, max_body_bytes=100), client, scope(10))
    assert client.status == 413
    assert app.calls == 0


def test_app_sees_the_full_body_in_one_message():
    chunks = [b"\x00\xff" * 10, b"middle", b"\x80end"]
    app, client = EchoApp(), Client(chunks)
    serve(RequestGuard(app, max_body_bytes=100), client, scope(sum(map(len, chunks))))
    assert client.status == 200
    assert app.bodies == [b"".join(chunks)]
    assert len(app.messages) == 1
    assert json.loads(client.body) == {"length": 30}


def test_body_exactly_at_the_limit_passes():
    app, client = EchoApp(), Client([b"x" * 100])
    serve(RequestGuard(app, max_body_bytes=100), client, scope(100))
    assert client.status == 200
    assert app.bodies == [b"x" * 100]


def test_disconnect_while_the_app_waits_cancels_it():
    state: dict[str, Any] = {"cancelled": False, "finished": False}
    disconnects: list[int] = []

    async def slow_app(scope_, receive, send) -> None:
        await receive()
        try:
            await asyncio.sleep(3)  # waiting on the batcher
            state["finished"] = True
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})

    client = Client([b"{}"], disconnect_after=0.05)
    guard = RequestGuard(slow_app, max_body_bytes=100, on_disconnect=lambda: disconnects.append(1))

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(guard(scope(2), client.receive, client.send), 5)
        return loop.time() - start

    elapsed = asyncio.run(main())
    assert state == {"cancelled": True, "finished": False}
    assert disconnects == [1]
    assert client.sent == []  # no one is left to answer
    assert elapsed < 2


def test_no_disconnect_callback_when_the_client_stays():
    disconnects: list[int] = []
    app, client = EchoApp(), Client([b"abc"])
    serve(RequestGuard(app, max_body_bytes=100, on_disconnect=lambda: disconnects.append(1)),
          client, scope(3))
    assert client.status == 200
    assert disconnects == []


def test_app_reading_past_the_body_sees_the_disconnect():
    seen: list[str] = []

    async def app(scope_, receive, send) -> None:
        await receive()
        try:
            seen.append((await receive())["type"])  # Starlette's is_disconnected() does this
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    client = Client([b"{}"], disconnect_after=0.02)
    serve(RequestGuard(app, max_body_bytes=100), client, scope(2))
    assert seen in (["http.disconnect"], ["cancelled"])


def test_other_scopes_pass_straight_through():
    calls: list[str] = []

    async def app(scope_, receive, send) -> None:
        calls.append(scope_["type"])

    guard = RequestGuard(app, max_body_bytes=1)
    client = Client([b"x" * 10])
    asyncio.run(guard({"type": "lifespan"}, client.receive, client.send))
    assert calls == ["lifespan"]
    assert client.receives == 0
