"""RequestGuard: head and body limits, inflating, request ids, disconnects, the catch-all."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from typing import Any

import pytest

from predictor.server.rest_middleware import RequestGuard

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


def header(client: Client, name: bytes) -> bytes | None:
    starts = [m for m in client.sent if m["type"] == "http.response.start"]
    return dict(starts[0]["headers"]).get(name) if starts else None


def encoded_scope(encoding: str, length: int | None = None) -> dict[str, Any]:
    s = scope(length)
    s["headers"].append((b"content-encoding", encoding.encode()))
    return s


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "x-gzip", "GZip"])
def test_compressed_body_reaches_the_app_inflated(encoding):
    body = json.dumps({"inputs": ["x" * 500]}).encode()
    packed = zlib.compress(body) if encoding == "deflate" else gzip.compress(body)
    app, client = EchoApp(), Client([packed[:7], packed[7:]])
    serve(RequestGuard(app, max_body_bytes=10_000), client, encoded_scope(encoding, len(packed)))
    assert client.status == 200
    assert app.bodies == [body]


def test_raw_deflate_is_accepted_too():
    body = b'{"instances": []}' * 20
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    packed = packer.compress(body) + packer.flush()
    app, client = EchoApp(), Client([packed])
    serve(RequestGuard(app, max_body_bytes=10_000), client, encoded_scope("deflate"))
    assert app.bodies == [body]


def test_gzip_bomb_is_refused_without_inflating_it():
    bomb = gzip.compress(b"\0" * 50_000_000, compresslevel=9)  # ~50 KB on the wire
    rejected: list[str] = []
    app, client = EchoApp(), Client([bomb])
    guard = RequestGuard(app, max_body_bytes=1_000_000, on_reject=rejected.append)
    serve(guard, client, encoded_scope("gzip", len(bomb)))
    assert client.status == 413
    error = json.loads(client.body)["error"]
    assert "inflates to more than 1000000 bytes" in error
    assert "--max_body_bytes" in error
    assert app.calls == 0
    assert rejected == ["too_large"]


def test_corrupt_or_truncated_gzip_is_400():
    packed = gzip.compress(b"x" * 1000)
    for bad in (b"not gzip at all", packed[: len(packed) // 2]):
        app, client = EchoApp(), Client([bad])
        serve(RequestGuard(app, max_body_bytes=10_000), client, encoded_scope("gzip"))
        assert client.status == 400, bad
        assert "gzip" in json.loads(client.body)["error"]
        assert app.calls == 0


def test_unknown_content_encoding_is_415_naming_what_works():
    app, client = EchoApp(), Client([b"xx"])
    serve(RequestGuard(app, max_body_bytes=100), client, encoded_scope("br"))
    assert client.status == 415
    assert "gzip, deflate" in json.loads(client.body)["error"]


def test_every_answer_carries_a_request_id_and_keeps_the_callers():
    app, client = EchoApp(), Client([b"{}"])
    serve(RequestGuard(app, max_body_bytes=100), client, scope(2))
    generated = header(client, b"x-request-id")
    assert generated
    assert len(generated) == 32
    s = scope(2)
    s["headers"].append((b"x-request-id", b"trace-42"))
    client = Client([b"{}"])
    serve(RequestGuard(app, max_body_bytes=100), client, s)
    assert header(client, b"x-request-id") == b"trace-42"


def test_unexpected_exception_is_a_500_with_the_request_id_not_the_text(caplog):
    async def broken(scope_, receive, send) -> None:
        await receive()
        raise RuntimeError("secret internal detail /opt/app/x.py")

    client = Client([b"{}"])
    serve(RequestGuard(broken, max_body_bytes=100), client, scope(2))
    assert client.status == 500
    error = json.loads(client.body)["error"]
    request_id = header(client, b"x-request-id").decode()
    assert request_id in error
    assert "secret" not in error
    assert "RuntimeError" not in error
    assert request_id in caplog.text
    assert "secret internal detail" in caplog.text


def test_400_answers_are_counted_as_invalid():
    async def refuse(scope_, receive, send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    rejected: list[str] = []
    serve(RequestGuard(refuse, max_body_bytes=100, on_reject=rejected.append), Client([b"{}"]),
          scope(2))
    serve(RequestGuard(EchoApp(), max_body_bytes=100, on_reject=rejected.append),
          Client([b"{}"]), scope(2))
    assert rejected == ["invalid"]
