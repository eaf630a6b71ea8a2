"""The inference service's models, for ``/v1/vision/custom/{model}`` and its list.

One inference service may serve several models (``--model_repository``, KServe's
multi-model serving): the DeepStack route ``/v1/vision/custom/{model}`` then sends the
picture to the model of that name. :class:`ServiceModels` asks the service which models
it serves (``AsyncDetectionClient.models``, a second or so cached) and keeps one client
per model asked for, only for models the service lists, so that a stranger's made-up
names cost nothing to keep.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import httpx

from client import AsyncDetectionClient

__all__ = ["MIN_ASK_INTERVAL", "ServiceModels"]

MIN_ASK_INTERVAL = 0.5  # seconds


class ServiceModels:
    """The service's ready models and a client for each one asked for.

    Args:
        default: The backend's client, for ``--model``.
        transport: The backend's httpx transport (tests), for the other models' clients.
        sleep: The backend's wait between retries (it counts them).
        ttl: Seconds a model list is reused before the service is asked again.
    """

    def __init__(self, default: AsyncDetectionClient,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None,
                 ttl: float = 2.0) -> None:
        self.default = default
        self._transport = transport
        self._sleep = sleep
        self.ttl = ttl
        self._names: list[str] = []
        self._asked = -float("inf")
        self._clients: dict[str, AsyncDetectionClient] = {}

    async def names(self, fresh: bool = False) -> list[str]:
        """Names of the models the service serves now (ready ones), the default first.

        Raises:
            ClientError: The service could not be asked.
        """
        age = time.monotonic() - self._asked
        # A fresh list at most twice a second: made-up names must not flood the service.
        if age > self.ttl or (fresh and age > MIN_ASK_INTERVAL):
            entries = await self.default.models()
            self._names = [e.name for e in entries if e.ready]
            self._asked = time.monotonic()
            await self._prune()
        default = self.default.config.model
        return sorted(self._names, key=lambda n: (n != default, n))

    async def client_for(self, name: str) -> AsyncDetectionClient | None:
        """The client for model ``name``; None when the service does not serve it.

        Raises:
            ClientError: The service could not be asked.
        """
        if name == self.default.config.model:
            return self.default
        # A name not in the last list may have been loaded since: ask again at once.
        if name not in await self.names(fresh=name not in self._names):
            return None
        if name not in self._clients:
            self._clients[name] = AsyncDetectionClient(
                config=replace(self.default.config, model=name), transport=self._transport,
                sleep=self._sleep)
        return self._clients[name]

    async def _prune(self) -> None:
        """Closes the clients of models the service no longer lists."""
        for name in [n for n in self._clients if n not in self._names]:
            await self._clients.pop(name).close()

    async def close(self) -> None:
        """Closes every client but the default one (its owner closes it)."""
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

