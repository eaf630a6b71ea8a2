"""Graceful shutdown: on SIGTERM, stop taking work on both ports at once.

KServe 0.21 lets uvicorn drain the REST port first and stops its gRPC server only
after that, so for up to a grace period gRPC would still take new requests. Here the
first SIGTERM also marks the model not ready (readiness probes fail, so Kubernetes
stops routing) but draining, so that a request already received (its body still
arriving, say) is served, and starts the gRPC server's own graceful stop, which refuses
new calls and lets those in flight finish. REST in-flight requests finish under uvicorn's drain;
the process then exits 0. :mod:`predictor.server.compat` calls :meth:`begin` from
uvicorn's signal handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


class GracefulShutdown:
    """Marks the model not ready and drains gRPC alongside REST."""

    def __init__(self, model: Any, grace_period: float,
                 stop_grpc: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.model = model
        self.grace_period = grace_period
        self.stop_grpc = stop_grpc
        self.started = False

    def begin(self) -> None:
        """Runs in the signal handler: schedule the drain on the event loop."""
        if self.started:
            return
        self.started = True
        self.model.ready = False  # readiness probes fail: Kubernetes stops routing here
        self.model.draining = True  # requests already received are still served
        log.info("SIGTERM: not ready any more; draining for up to %ss", self.grace_period)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain_grpc()))

    async def _drain_grpc(self) -> None:
        if self.stop_grpc is not None:
            await self.stop_grpc(self.grace_period)
            log.info("gRPC server drained")
