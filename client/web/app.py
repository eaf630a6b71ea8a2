"""The ASGI app: routes, error answers, security headers, request metrics, lifespan.

The app is the product's backend and the inference service's *client*: it reaches the
service only through :class:`~client.AsyncDetectionClient`, made when the app starts (a
gRPC channel belongs to the running event loop) and closed when it stops. Two APIs share
it: the page's own (:mod:`client.web.api`) and DeepStack's (:mod:`client.web.deepstack`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from client import AsyncDetectionClient

from . import api, deepstack
from .errors import ApiError, error_body
from .guard import InFlight, KeyCheck
from .metrics import WebMetrics
from .models import ServiceModels
from .monitor import ServiceMonitor
from .settings import WebSettings

if TYPE_CHECKING:
    import httpx

__all__ = ["SECURITY_HEADERS", "create_app"]

log = logging.getLogger("client.web")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Sent with every answer. The page loads nothing from elsewhere (no CDN), so the policy
#: can allow only this origin; pictures show from ``blob:`` URLs made in the browser.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
# Encoded once: every answer carries them.
_RAW_SECURITY_HEADERS = tuple((k.encode("latin-1"), v.encode("latin-1"))
                              for k, v in SECURITY_HEADERS.items())


def create_app(settings: WebSettings, *,
               transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """The web backend for ``settings``.

    Args:
        settings: Where the inference service is, and the upload limits.
        transport: An httpx transport for REST calls to the inference service (tests).
    """
    metrics = WebMetrics()

    async def counted_sleep(seconds: float) -> None:
        # The client calls this between attempts: one call, one retry.
        metrics.retries.inc()
        await asyncio.sleep(seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = AsyncDetectionClient(config=settings.client, transport=transport,
                                      sleep=counted_sleep)
        monitor = ServiceMonitor(client.health, model=settings.client.model,
                                 interval=settings.health_interval,
                                 timeout=settings.probe_timeout, on_change=metrics.observe_state)
        app.state.deepstack = deepstack.Answering.of(settings)
        models = ServiceModels(client, transport, counted_sleep)
        app.state.backend = api.Backend(settings, client, monitor, metrics,
                                        KeyCheck(settings.api_key),
                                        InFlight(settings.max_in_flight), models)
        monitor.start()
        log.info("web backend for model %r at %s (%s)", settings.client.model,
                 settings.client.url if settings.client.protocol != "grpc"
                 else settings.client.grpc_target()[0], settings.client.protocol)
        log.info("DeepStack API at /v1/vision/detection and /v1/vision/custom/%s (API key: "
                 "%s; at most %d pictures in flight)", settings.client.model,
                 ("required, also on /api/detect" if settings.protect_page_api else "required")
                 if settings.api_key else "none", settings.max_in_flight)
        try:
            yield
        finally:
            await monitor.stop()
            await models.close()
            await client.close()

    routes = [
        Route("/", api.index, methods=["GET", "HEAD"]),
        Route("/api/detect", api.detect, methods=["POST"]),
        Route("/api/models", api.models, methods=["GET"]),
        Route("/v1/vision/detection", deepstack.detection, methods=["POST"]),
        # Before /custom/{model}: CodeProject.AI routes "list" to the model list, whatever
        # the models are called.
        Route("/v1/vision/custom/list", deepstack.custom_list, methods=["POST", "GET"]),
        Route("/v1/vision/custom/{model}", deepstack.detection, methods=["POST"]),
        Route("/v1/server/status/ping", deepstack.ping, methods=["GET"]),
        Route("/v1/status/ping", deepstack.ping, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET", "HEAD"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Mount("/static", StaticFiles(directory=api.STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, Exception: _unexpected})
    app.add_middleware(_Observed, metrics=metrics)
    return app


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(error_body(request.url.path, exc.status, exc.message),
                        status_code=exc.status,
                        headers={**exc.headers, "Cache-Control": "no-store"})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: f"no such page: {request.url.path}",
                405: f"{request.method} is not allowed on {request.url.path}"}
    message = messages.get(exc.status_code, str(exc.detail))
    return JSONResponse(error_body(request.url.path, exc.status_code, message),
                        status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug here must cost one request, and show no internals: the log has the details.
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    message = "the web backend failed unexpectedly; its log has the details"
    return JSONResponse(error_body(request.url.path, 500, message), status_code=500,
                        headers=SECURITY_HEADERS)


class _Observed:
    """Adds the security headers to every answer and counts it in the metrics."""

    def __init__(self, app: ASGIApp, metrics: WebMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), *_RAW_SECURITY_HEADERS]
            await send(message)

        try:
            await self._app(scope, receive, send_with_headers)
        finally:
            self._metrics.observe_request(scope.get("path", ""), status,
                                          time.perf_counter() - started)
