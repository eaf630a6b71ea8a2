"""The client lists a server's models: the repository index, or KServe's list without one."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from client import AsyncDetectionClient, DetectionClient, ModelEntry, ServerError

INDEX = [{"name": "site-a", "version": "2", "state": "READY", "reason": ""},
         {"name": "site-b", "version": "", "state": "UNAVAILABLE", "reason": "not loaded"}]


def _server(with_index: bool) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/repository/index" and with_index:
            assert request.method == "POST"
            assert json.loads(request.content) == {}
            return httpx.Response(200, json=INDEX)
        if request.url.path == "/v2/models" and request.method == "GET":
            return httpx.Response(200, json={"models": ["detector"]})
        return httpx.Response(404, json={"error": "no route"})
    return httpx.MockTransport(handle)


def test_the_index_lists_every_model_with_its_state() -> None:
    with DetectionClient(transport=_server(with_index=True)) as client:
        models = client.models()
    assert models == [ModelEntry("site-a", "2", "READY", ""),
                      ModelEntry("site-b", "", "UNAVAILABLE", "not loaded")]
    assert [m.ready for m in models] == [True, False]


def test_a_server_without_an_index_lists_what_it_serves() -> None:
    with DetectionClient(transport=_server(with_index=False), protocol="v1") as client:
        assert client.models() == [ModelEntry("detector")]


def test_the_async_client_lists_them_too() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=INDEX)

    async def main() -> list[ModelEntry]:
        async with AsyncDetectionClient(transport=httpx.MockTransport(handle)) as client:
            return await client.models()

    assert [m.name for m in asyncio.run(main())] == ["site-a", "site-b"]


def test_an_answer_that_is_no_index_is_a_server_error() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"models": "?"})

    with DetectionClient(transport=httpx.MockTransport(handle), retries=0) as client, \
            pytest.raises(ServerError, match="repository index"):
        client.models()
