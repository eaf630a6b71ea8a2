"""The routes' handlers: the page, ``POST /api/detect``, ``/healthz`` and ``/metrics``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response

from client import AsyncDetectionClient, ClientError, ImageResult

from .errors import error_for_client, error_kind
from .metrics import WebMetrics
from .monitor import ServiceMonitor
from .settings import WebSettings
from .uploads import Upload, read_upload

__all__ = ["STATIC_DIR", "Backend", "detect", "healthz", "index", "metrics"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
# nginx's code for "the client closed the request": only ever seen in metrics.
_CLIENT_CLOSED = 499


@dataclass
class Backend:
    """What the handlers share: settings, the inference client, its state, the metrics."""

    settings: WebSettings
    client: AsyncDetectionClient
    monitor: ServiceMonitor
    metrics: WebMetrics


def _backend(request: Request) -> Backend:
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
    backend = _backend(request)
    started = time.perf_counter()
    try:
        upload = await read_upload(request, backend.settings)
    except ClientDisconnect:
        return Response(status_code=_CLIENT_CLOSED)
    results, inference_s = await _infer(backend, upload)
    versions = [r.model_version for r in results if r.model_version]
    body: dict[str, Any] = {
        "results": [
            {"filename": picture.filename, "image_size": list(result.image_size),
             "detections": [d.to_dict() for d in result.detections]}
            for picture, result in zip(upload.pictures, results, strict=True)
        ],
        "model": backend.settings.client.model,
        "model_version": versions[0] if versions else None,
    }
    total_s = time.perf_counter() - started
    body["timing"] = {"inference_ms": round(inference_s * 1000, 2),
                      "total_ms": round(total_s * 1000, 2)}
    # Server-Timing lets a browser's developer tools show the same split.
    timing = f"inference;dur={inference_s * 1000:.1f}, total;dur={total_s * 1000:.1f}"
    return JSONResponse(body, headers={"Server-Timing": timing, "Cache-Control": "no-store"})


async def _infer(backend: Backend, upload: Upload) -> tuple[list[ImageResult], float]:
    """Calls the inference service; returns the results and the seconds the call took."""
    config = backend.settings.client
    started = time.perf_counter()
    try:
        results = await backend.client.detect(
            [picture.data for picture in upload.pictures],
            score_threshold=upload.score_threshold, max_detections=upload.max_detections,
            classes=upload.classes, concurrency=backend.settings.concurrency)
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


async def healthz(request: Request) -> Response:
    """``GET /healthz``: 200 while the app runs, with the inference service's last state."""
    backend = _backend(request)
    service = {**backend.monitor.state.to_dict(), "model": backend.settings.client.model,
               "protocol": backend.settings.client.protocol}
    return JSONResponse({"status": "ok", "inference_service": service},
                        headers={"Cache-Control": "no-store"})


async def metrics(request: Request) -> Response:
    """``GET /metrics``: the app's own Prometheus metrics."""
    content, content_type = _backend(request).metrics.render()
    return Response(content, media_type=content_type)
