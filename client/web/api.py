"""The page's routes (the page, ``POST /api/detect``, ``/healthz``, ``/metrics``) and what
every route shares (:class:`Backend`: the client, the guards, the metrics; :func:`infer`).

The DeepStack routes live in :mod:`client.web.deepstack`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response

from client import AsyncDetectionClient, ClientError, ImageResult

from .errors import ApiError, error_for_client, error_kind
from .guard import InFlight, KeyCheck
from .metrics import WebMetrics
from .models import ServiceModels, client_for_name, served_names
from .monitor import ServiceMonitor
from .settings import WebSettings
from .uploads import read_upload

__all__ = ["CLIENT_CLOSED", "STATIC_DIR", "Backend", "backend_of", "detect", "healthz",
           "index", "infer", "metrics", "models"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: nginx's code for "the client closed the request": only ever seen in metrics.
CLIENT_CLOSED = 499


@dataclass
class Backend:
    """What the handlers share: settings, the inference client, its state, the metrics,
    the API key and the in-flight cap."""

    settings: WebSettings
    client: AsyncDetectionClient
    monitor: ServiceMonitor
    metrics: WebMetrics
    key: KeyCheck
    in_flight: InFlight
    models: ServiceModels | None = None  # the service's other models (DeepStack's custom)

    @contextlib.contextmanager
    def holding(self, pictures: int) -> Iterator[None]:
        """Holds ``pictures`` places under ``--max-in-flight`` for the ``with`` block.

        Raises:
            ApiError: 503 + Retry-After at once when they are not free (counted).
        """
        try:
            self.in_flight.take(pictures)
        except ApiError:
            self.metrics.refused.labels(reason="in_flight").inc()
            raise
        self.metrics.in_flight.set(self.in_flight.count)
        try:
            yield
        finally:
            self.in_flight.give_back(pictures)
            self.metrics.in_flight.set(self.in_flight.count)

    def check_key(self, request: Request, form_key: str | None) -> None:
        """Checks the request's API key (see :class:`KeyCheck`); a refusal is counted."""
        try:
            self.key.check(request.headers, form_key)
        except ApiError:
            self.metrics.refused.labels(reason="api_key").inc()
            raise


def backend_of(request: Request) -> Backend:
    """The app's :class:`Backend`."""
    backend: Backend = request.app.state.backend
    return backend


async def index(request: Request) -> Response:
    """``GET /``: the page (its script and style come from ``/static``)."""
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def detect(request: Request) -> Response:
    """``POST /api/detect``: multipart ``file`` fields in, detections per picture out.

    Answers ``{"results": [{"filename", "image_size", "detections"}], "timing":
    {"inference_ms", "total_ms"}, "model", "model_version"}``; failures are
    ``{"error": ...}`` with the status :mod:`client.web.errors` gives them.
    """
    backend = backend_of(request)
    started = time.perf_counter()
    try:
        upload = await read_upload(request, backend.settings)
    except ClientDisconnect:
        return Response(status_code=CLIENT_CLOSED)
    if backend.settings.protect_page_api:
        backend.check_key(request, upload.api_key)
    client = await client_for_name(backend.models, backend.client, upload.model)
    with backend.holding(len(upload.pictures)):
        results, inference_s = await infer(
            backend, [picture.data for picture in upload.pictures],
            score_threshold=upload.score_threshold, max_detections=upload.max_detections,
            classes=upload.classes, client=client)
    versions = [r.model_version for r in results if r.model_version]
    body: dict[str, Any] = {
        "results": [
            {"filename": picture.filename, "image_size": list(result.image_size),
             "detections": [d.to_dict() for d in result.detections]}
            for picture, result in zip(upload.pictures, results, strict=True)
        ],
        "model": (client or backend.client).config.model,
        "model_version": versions[0] if versions else None,
    }
    total_s = time.perf_counter() - started
    body["timing"] = {"inference_ms": round(inference_s * 1000, 2),
                      "total_ms": round(total_s * 1000, 2)}
    # Server-Timing lets a browser's developer tools show the same split.
    timing = f"inference;dur={inference_s * 1000:.1f}, total;dur={total_s * 1000:.1f}"
    return JSONResponse(body, headers={"Server-Timing": timing, "Cache-Control": "no-store"})


async def infer(backend: Backend, pictures: Sequence[bytes], *,
                score_threshold: float | None = None, max_detections: int | None = None,
                classes: Sequence[str] | None = None,
                client: AsyncDetectionClient | None = None) -> tuple[list[ImageResult], float]:
    """Calls the inference service; returns the results and the seconds the call took.

    ``client`` is another model's (``/v1/vision/custom/{model}``); the backend's own when None.

    Raises:
        ApiError: The call failed; the status and message :mod:`client.web.errors` give it.
    """
    client = client or backend.client
    config = client.config
    started = time.perf_counter()
    try:
        results = await client.detect(
            list(pictures), score_threshold=score_threshold, max_detections=max_detections,
            classes=classes, concurrency=backend.settings.concurrency)
    except ClientError as exc:
        backend.metrics.inference_errors.labels(kind=error_kind(exc)).inc()
        backend.monitor.report_error(exc)
        raise error_for_client(exc, model=config.model, timeout=config.timeout,
                               retries=config.retries) from None
    seconds = time.perf_counter() - started
    backend.metrics.inference_seconds.observe(seconds)
    backend.metrics.images.inc(len(results))
    backend.monitor.report_success()
    return results, seconds


async def models(request: Request) -> Response:
    """``GET /api/models``: ``{"models": [...], "default": name}``, the models the inference
    service serves and are ready (the backend's own first), for the page's model picker."""
    backend = backend_of(request)
    names = await served_names(backend.models, backend.client)
    return JSONResponse({"models": names, "default": backend.settings.client.model},
                        headers={"Cache-Control": "no-store"})


async def healthz(request: Request) -> Response:
    """``GET /healthz``: 200 while the app runs, with the inference service's last state."""
    backend = backend_of(request)
    service = {**backend.monitor.state.to_dict(), "model": backend.settings.client.model,
               "protocol": backend.settings.client.protocol}
    return JSONResponse({"status": "ok", "inference_service": service},
                        headers={"Cache-Control": "no-store"})


async def metrics(request: Request) -> Response:
    """``GET /metrics``: the app's own Prometheus metrics."""
    content, content_type = backend_of(request).metrics.render()
    return Response(content, media_type=content_type)
