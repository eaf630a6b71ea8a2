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

from client import AsyncDetectionClient, ClientError

from .errors import ApiError, error_for_client

__all__ = ["MIN_ASK_INTERVAL", "ServiceModels", "client_for_name", "served_names"]

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



async def client_for_name(models: ServiceModels | None, default: AsyncDetectionClient,
                          name: str | None) -> AsyncDetectionClient | None:
    """The client for a request naming model ``name``: None for the backend's own model.

    Raises:
        ApiError: 404 naming the models served when the service does not serve ``name``;
            the service's failure when it could not be asked.
    """
    own = default.config.model
    if name is None or name == own:
        return None
    if models is None:
        raise ApiError(404, f"no model {name!r} here: this backend serves {own!r}")
    try:
        client = await models.client_for(name)
        served = [] if client is not None else await models.names()
    except ClientError as exc:
        config = default.config
        raise error_for_client(exc, model=name, timeout=config.timeout,
                               retries=config.retries) from None
    if client is None:
        listed = ", ".join(repr(n) for n in served) or repr(own)
        raise ApiError(404, f"no model {name!r} here: this backend serves {listed}")
    return client


async def served_names(models: ServiceModels | None, default: AsyncDetectionClient
                       ) -> list[str]:
    """The models to offer, the backend's own first; its own alone when the service
    cannot be asked (logged by the caller's monitor, not here)."""
    if models is None:
        return [default.config.model]
    try:
        return await models.names() or [default.config.model]
    except ClientError:
        return [default.config.model]
