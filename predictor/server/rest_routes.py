"""The REST routes of the server, registered on KServe's FastAPI app ahead of its own.

:class:`InferenceRoutes` serves V1 predict, V2 infer and V2 metadata: bodies are parsed
by :mod:`predictor.protocol` (no pydantic model in the way) and answers encoded there
too. The error handlers make every error body ``{"error": ...}``, 404 and 405 included.
:func:`install` adds these and the :class:`~predictor.server.rest_middleware.RequestGuard`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.protocol.dataplane import DataPlane
from starlette.exceptions import HTTPException

from ..config import Limits
from ..errors import ServiceError, client_error
from ..protocol import RequestError, V2Answer, rest
from .rest_middleware import OnReject, RequestGuard
from .served import MODEL_VERSION, ServedModel, check_version, served_model


class InferenceRoutes:
    """V1 predict, V2 infer and V2 metadata, parsed and encoded by :mod:`predictor.protocol`."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def _model(self, name: str, version: str = "") -> ServedModel:
        return served_model(self.dataplane, name, version)

    async def v1_predict(self, model_name: str, request: Request) -> Response:
        """``POST /v1/models/{name}:predict``."""
        model = await self._model(model_name)
        parsed = rest.parse_v1_body(await request.body(), request.headers.get("content-type"),
                                    model.limits.max_images_per_request)
        result, _ = await self.dataplane.infer(model_name, parsed, dict(request.headers))
        return Response(orjson.dumps(result), media_type="application/json",
                        headers={MODEL_VERSION: model.version})

    async def v2_infer(self, model_name: str, request: Request, model_version: str = ""
                       ) -> Response:
        """``POST /v2/models/{name}[/versions/{version}]/infer``."""
        model = await self._model(model_name, model_version)
        parsed = rest.parse_v2_body(await request.body(), request.headers.get(rest.HEADER_LENGTH),
                                    max_images=model.limits.max_images_per_request,
                                    max_pixels=model.limits.max_image_pixels)
        answer, _ = await self.dataplane.infer(model_name, parsed, dict(request.headers))
        assert isinstance(answer, V2Answer)
        body, media, json_length = rest.encode_v2(answer, model.name, model.version)
        headers = {MODEL_VERSION: model.version}
        if json_length:
            headers[rest.HEADER_LENGTH] = str(json_length)
        return Response(body, media_type=media, headers=headers)

    async def v2_metadata(self, model_name: str, model_version: str = "") -> Response:
        """``GET /v2/models/{name}[/versions/{version}]``: KServe's, plus ``versions``."""
        model = self.dataplane.get_model_from_registry(model_name)
        check_version(model, model_version)
        metadata = await self.dataplane.model_metadata(model_name)
        return Response(orjson.dumps({
            "name": metadata["name"], "versions": [model.version],
            "platform": getattr(model, "platform", "") or metadata["platform"],
            "inputs": metadata["inputs"], "outputs": metadata["outputs"]}),
            media_type="application/json")

    async def v2_ready(self, model_name: str, model_version: str) -> Response:
        """``GET /v2/models/{name}/versions/{version}/ready`` (KServe's answers 501)."""
        model = await self._model(model_name, model_version)
        return Response(orjson.dumps({"name": model.name, "ready": True}),
                        media_type="application/json")

    def register(self, app: FastAPI) -> None:
        """Adds the routes; call before KServe adds its own, so that these match first."""
        app.add_api_route("/v1/models/{model_name}:predict", self.v1_predict, methods=["POST"])
        versioned = "/v2/models/{model_name}/versions/{model_version}"
        for prefix in ("/v2/models/{model_name}", versioned):
            app.add_api_route(prefix + "/infer", self.v2_infer, methods=["POST"])
            app.add_api_route(prefix, self.v2_metadata, methods=["GET"])
        app.add_api_route(versioned + "/ready", self.v2_ready, methods=["GET"])


async def service_error_handler(_: Request, exc: Exception) -> Response:
    """ServiceError -> its HTTP status, with Retry-After when it has one."""
    assert isinstance(exc, ServiceError)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return _error(exc.http_status, str(exc), headers)


async def client_error_handler(_: Request, exc: Exception) -> Response:
    """A malformed request, bad input, an unknown or unready model: its status, no log.

    In place of KServe's handlers, which log each with a traceback; the guard logs the
    one line a client's mistake is worth.
    """
    known = client_error(exc)
    assert known is not None
    return await service_error_handler(_, known[1])


async def validation_error_handler(_: Request, exc: Exception) -> Response:
    """FastAPI's 422 for a malformed body becomes a 400 with one readable line."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return _error(400, "invalid request: " + "; ".join(problems))


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's 404/405 (``{"detail": ...}``) in the server's ``{"error": ...}`` form."""
    assert isinstance(exc, HTTPException)
    message = str(exc.detail)
    if exc.status_code == 404:
        message = (f"no route {request.method} {request.url.path}; inference is POST "
                   f"/v1/models/NAME:predict or POST /v2/models/NAME/infer")
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return _error(exc.status_code, message, dict(exc.headers or {}))


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps({"error": message}), status_code=status,
                    media_type="application/json", headers=headers)


def install(app: FastAPI, dataplane: DataPlane, max_body_bytes: int,
            on_reject: OnReject | None = None,
            on_disconnect: Callable[[], None] | None = None,
            max_header_bytes: int = Limits.max_header_bytes) -> None:
    """Adds the guard, the routes and the error handlers to KServe's app.

    KServe adds its own handlers when it starts; call :func:`install_error_handlers`
    again after that (predictor.server.compat does) so that ours win.
    """
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes, on_reject=on_reject,
                       on_disconnect=on_disconnect, max_header_bytes=max_header_bytes)
    InferenceRoutes(dataplane).register(app)
    install_error_handlers(app)


def install_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": ...}`` with its status; a client's mistake logs no traceback."""
    app.add_exception_handler(ServiceError, service_error_handler)
    for client_mistake in (RequestError, InvalidInput, ModelNotFound, ModelNotReady):
        app.add_exception_handler(client_mistake, client_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
