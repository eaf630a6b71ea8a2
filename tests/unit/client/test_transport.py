"""client._transport: the one I/O seam. A transport moves a request out and an answer in;
an HTTP error status is an answer (the codec reads it), no answer at all is an error."""

from __future__ import annotations

import httpx
import pytest

from client import ClientConfig, Overloaded, ServerUnreachable
from client._base import codec_for
from client._http import HttpAnswer, HttpRequest
from client._transport import AsyncHttpxTransport, HttpxTransport, open_transport


def busy(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, headers={"Retry-After": "2"}, json={"error": "queue full"})


def test_an_error_status_is_an_answer_that_the_codec_turns_into_the_error() -> None:
    config = ClientConfig(url="http://model.test", retries=0)
    transport = HttpxTransport(config, httpx.MockTransport(busy))
    try:
        answer = transport.send(HttpRequest("GET", "/v2/models/detector"))
    finally:
        transport.close()
    assert answer == HttpAnswer(503, answer.headers, b'{"error":"queue full"}')
    with pytest.raises(Overloaded, match="overloaded") as caught:
        codec_for(config).metadata(answer)
    assert caught.value.retry_after == 2


def test_no_answer_at_all_is_the_clients_error_naming_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    transport = open_transport(ClientConfig(url="http://model.test:9"),
                               httpx.MockTransport(refuse))
    try:
        with pytest.raises(ServerUnreachable,
                           match=r"cannot connect to http://model.test:9: Connection refused"):
            transport.send(HttpRequest("GET", "/v2/models/detector/ready"))
    finally:
        transport.close()


async def _async_round_trip() -> HttpAnswer:
    config = ClientConfig(url="http://model.test")
    transport = AsyncHttpxTransport(config, httpx.MockTransport(busy))
    try:
        return await transport.send(HttpRequest("GET", "/v2/models/detector/ready"))
    finally:
        await transport.close()


def test_the_async_transport_hands_back_the_same_answer() -> None:
    import asyncio

    answer = asyncio.run(_async_round_trip())
    assert answer.status == 503
    assert answer.headers["retry-after"] == "2"
