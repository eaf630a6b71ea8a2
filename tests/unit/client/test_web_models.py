"""web.models: a client per model the service serves, the list cached, strangers' names cheap."""

from __future__ import annotations

import asyncio

import httpx

from client import AsyncDetectionClient
from client.web.models import ServiceModels


def test_clients_only_for_models_the_service_serves() -> None:
    served = {"names": ["detector", "site-a"]}
    asked: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(200, json=[{"name": n, "state": "READY"} for n in served["names"]]
                              + [{"name": "broken", "state": "UNAVAILABLE"}])

    async def main() -> None:
        transport = httpx.MockTransport(handle)
        default = AsyncDetectionClient(transport=transport)
        models = ServiceModels(default, transport, ttl=60)
        assert await models.client_for("detector") is default
        assert asked == []  # the backend's own model needs no list
        assert await models.names() == ["detector", "site-a"]
        site_a = await models.client_for("site-a")
        assert site_a is not None
        assert site_a.config.model == "site-a"
        assert await models.client_for("site-a") is site_a
        assert await models.client_for("broken") is None  # listed, but not ready
        for _ in range(20):
            assert await models.client_for("made-up") is None
        assert len(asked) <= 2  # fresh lists at most twice a second
        served["names"] = ["detector"]  # site-a unloaded
        await asyncio.sleep(0.6)
        assert await models.names(fresh=True) == ["detector"]
        assert await models.client_for("site-a") is None
        assert "site-a" not in models._clients
        await models.close()
        await default.close()

    asyncio.run(main())
