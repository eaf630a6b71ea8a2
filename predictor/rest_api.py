"""The REST side of the server, in front of KServe's FastAPI app.

- :class:`RequestGuard` (ASGI middleware, one per request): gives every request an id
  (``x-request-id``, kept when the client sent one), inflates ``Content-Encoding: gzip``
  / ``deflate`` bodies, refuses bodies over ``--max_body_bytes`` (inflated size
  included) with 413, cancels a request whose client went away, counts refusals, and
  turns any unexpected exception into a 500 that names the request id and keeps the
  connection usable.
- :class:`InferenceRoutes`: the inference and metadata routes, registered ahead of
  KServe's own so that bodies are parsed by :mod:`predictor.protocol` (no pydantic
  model in the way) and answers are encoded there too.
- Error handlers: every error body is ``{"error": ...}``, 404 and 405 included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from kserve.errors import ModelNotReady
from kserve.protocol.dataplane import DataPlane
from starlette.exceptions import HTTPException

from .config import Limits
from .errors import ServiceError, VersionNotFound
from .protocol import RequestError, V2Answer, rest

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
OnReject = Callable[[str], None]

REQUEST_ID = "x-request-id"
MODEL_VERSION = "x-model-version"
_REASONS = {400: "invalid", 413: "too_large", 415: "invalid"}


def _json_message(status: int, message: str, request_id: str) -> list[Message]:
    body = json.dumps({"error": message}).encode()
    return [{"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (REQUEST_ID.encode(), request_id.encode())]},
            {"type": "http.response.body", "body": body}]


class RequestGuard:
    """ASGI middleware: request id, body limit and inflating, disconnects, catch-all."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, on_reject: OnReject | None = None,
                 on_disconnect: Callable[[], None] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.on_reject = on_reject
        self.on_disconnect = on_disconnect

    def _too_large(self, size: str) -> str:
        return (f"request body is {size} bytes; the limit is {self.max_body_bytes} bytes "
                f"(--max_body_bytes)")

    async def _refuse(self, send: Send, status: int, message: str, request_id: str) -> None:
        if self.on_reject is not None and status in _REASONS:
            self.on_reject(_REASONS[status])
        for part in _json_message(status, message, request_id):
            await send(part)

    async def _read_body(self, receive: Receive, inflater: rest.Inflater | None
                         ) -> bytes | tuple[int, str] | None:
        """The whole body (inflated); (status, message) to refuse it; None if the client left."""
        chunks: list[bytes] = []
        total = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                total += len(chunk)
                if total > self.max_body_bytes:
                    return 413, self._too_large(f"more than {total}")
                chunks.append(inflater.feed(chunk) if inflater else chunk)
                if not message.get("more_body", False):
                    break
            if inflater is not None:
                chunks.append(inflater.finish())
        except rest.BodyTooLarge:
            return 413, (f"request body inflates to more than {self.max_body_bytes} bytes; the "
                         f"limit is {self.max_body_bytes} bytes (--max_body_bytes)")
        except RequestError as exc:
            return 400, str(exc)
        return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(REQUEST_ID.encode(), b"").decode("latin-1")[:128] \
            or uuid.uuid4().hex
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(send, 413, self._too_large(declared.decode()), request_id)
            return
        encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
        inflater = None
        if encoding not in ("", "identity"):
            if not rest.Inflater.supported(encoding):
                await self._refuse(send, 415, f"Content-Encoding {encoding!r} is not supported; "
                                              f"send gzip, deflate or an uncompressed body",
                                   request_id)
                return
            inflater = rest.Inflater(encoding, self.max_body_bytes)
        body = await self._read_body(receive, inflater)
        if body is None:
            return
        if isinstance(body, tuple):
            await self._refuse(send, *body, request_id)
            return
        kept = [(k, v) for k, v in scope.get("headers") or []
                if k not in (b"content-encoding", b"content-length", REQUEST_ID.encode())]
        scope = {**scope, "headers": [*kept, (b"content-length", str(len(body)).encode()),
                                      (REQUEST_ID.encode(), request_id.encode())]}
        await self._run(scope, receive, send, body, request_id)

    async def _run(self, scope: Scope, receive: Receive, send: Send, body: bytes,
                   request_id: str) -> None:
        gone = asyncio.Event()
        replayed = False
        state = {"started": False, "finished": False}

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                status = int(message["status"])
                if self.on_reject is not None and status in _REASONS:
                    self.on_reject(_REASONS[status])
                message = {**message, "headers": [*message.get("headers", []),
                                                  (REQUEST_ID.encode(), request_id.encode())]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                state["finished"] = True
            await send(message)

        app_task = asyncio.ensure_future(self.app(scope, replay, tracking_send))

        async def watch() -> None:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                if not state["finished"] and not app_task.done():
                    app_task.cancel()
                    if self.on_disconnect is not None:
                        self.on_disconnect()

        watcher = asyncio.ensure_future(watch())
        try:
            await app_task
        except asyncio.CancelledError:
            if gone.is_set():
                return  # the client left; there is no one to answer
            raise
        except Exception:
            log.exception("request %s (%s %s) failed", request_id, scope.get("method"),
                          scope.get("path"))
            if not state["started"]:
                for part in _json_message(
                        500, f"internal server error; the server log has the details "
                             f"(request id {request_id})", request_id):
                    await send(part)
        finally:
            watcher.cancel()


class ServedModel(Protocol):
    """What the routes need of a model beyond KServe's interface."""

    name: str
    version: str
    limits: Limits
    ready: bool
    draining: bool


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
            "platform": metadata["platform"], "inputs": metadata["inputs"],
            "outputs": metadata["outputs"]}), media_type="application/json")

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


def served_model(dataplane: DataPlane, name: str, version: str = "") -> ServedModel:
    """The model a request names, if it may take the request.

    Not ready refuses it (503), except while draining after SIGTERM: a request that was
    received before the signal is served (the listener is closed by then, so no new
    connection arrives; gRPC refuses new calls itself).
    """
    model: ServedModel = dataplane.get_model_from_registry(name)  # ModelNotFound: 404
    if not (model.ready or getattr(model, "draining", False)):
        raise ModelNotReady(name)
    check_version(model, version)
    return model


def check_version(model: ServedModel, version: str) -> None:
    """A request naming a version gets 404 unless it is the one served."""
    if version and version != model.version:
        raise VersionNotFound(f"model {model.name} has no version {version!r}; it serves "
                              f"version {model.version!r}")


async def service_error_handler(_: Request, exc: Exception) -> Response:
    """ServiceError -> its HTTP status, with Retry-After when it has one."""
    assert isinstance(exc, ServiceError)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return _error(exc.http_status, str(exc), headers)


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
            on_disconnect: Callable[[], None] | None = None) -> None:
    """Adds the guard, the routes and the error handlers to KServe's app."""
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes, on_reject=on_reject,
                       on_disconnect=on_disconnect)
    InferenceRoutes(dataplane).register(app)
    app.add_exception_handler(ServiceError, service_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
