"""Graceful shutdown: on SIGTERM, stop taking work on both ports at once.

KServe 0.21 lets uvicorn drain the REST port first and stops its gRPC server only
after that, so for up to a grace period gRPC would still take new requests. Here the
first SIGTERM also marks the model not ready (readiness probes fail, so Kubernetes
stops routing) and starts the gRPC server's own graceful stop, which refuses new calls
and lets those in flight finish. REST in-flight requests finish under uvicorn's drain;
the process then exits 0.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger(__name__)


class GracefulShutdown:
    """Hooks uvicorn's signal handler so that gRPC drains alongside REST."""

    def __init__(self, server: Any, model: Any, grace_period: float) -> None:
        self.server = server
        self.model = model
        self.grace_period = grace_period
        self.started = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        """Wraps ``uvicorn.Server.handle_exit``; call before the server starts."""
        original = uvicorn.Server.handle_exit
        hook = self

        def handle_exit(uv_server: uvicorn.Server, sig: int, frame: FrameType | None) -> None:
            original(uv_server, sig, frame)
            hook.begin()

        uvicorn.Server.handle_exit = handle_exit  # type: ignore[method-assign,assignment]

    def begin(self) -> None:
        """Runs in the signal handler: schedule the drain on the event loop."""
        if self.started:
            return
        self.started = True
        self.model.ready = False
        log.info("SIGTERM: not ready any more; draining for up to %ss", self.grace_period)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon_threadsafe(lambda: loop.create_task(self._stop_grpc()))

    async def _stop_grpc(self) -> None:
        grpc_server = getattr(getattr(self.server, "_grpc_server", None), "_server", None)
        if grpc_server is not None:
            await grpc_server.stop(grace=self.grace_period)
            log.info("gRPC server drained")
