"""What the REST side needs beyond KServe: body limits, disconnects, error mapping, and
the fix for KServe 0.21's V2 binary BYTES decoding.

- :class:`RequestGuard` (ASGI middleware) refuses bodies over ``--max_body_bytes`` with
  413 before they are parsed, and cancels a request whose client went away, so its
  images leave the queue before they cost model time.
- :func:`install` registers the middleware and the handlers on KServe's FastAPI app.
- :func:`decode_binary_request` replaces KServe's decoder of binary-extension V2
  requests, which re-encodes every BYTES element as UTF-8 and so fails on image files.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from .errors import ServiceError

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER_LENGTH = "inference-header-content-length"


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: body size limit and cancel-on-disconnect."""

    def __init__(self, app: ASGIApp, max_body_bytes: int,
                 on_disconnect: Callable[[], None] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.on_disconnect = on_disconnect

    def _too_large(self, size: str) -> dict[str, str]:
        return {"error": f"request body is {size} bytes; the limit is {self.max_body_bytes} "
                         f"bytes (--max_body_bytes)"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _send_json(send, 413, self._too_large(declared.decode()))
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body_bytes:
                await _send_json(send, 413, self._too_large(f"more than {total}"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        gone = asyncio.Event()
        replayed = False
        finished = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def tracking_send(message: Message) -> None:
            nonlocal finished
            if message["type"] == "http.response.body" and not message.get("more_body"):
                finished = True
            await send(message)

        app_task = asyncio.ensure_future(self.app(scope, replay, tracking_send))

        async def watch() -> None:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                if not finished and not app_task.done():
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
        finally:
            watcher.cancel()


def _error_body(message: str) -> dict[str, str]:
    return {"error": message}


async def service_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """ServiceError -> its HTTP status, with Retry-After when it has one."""
    assert isinstance(exc, ServiceError)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return JSONResponse(status_code=exc.http_status, content=_error_body(str(exc)),
                        headers=headers)


async def validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 for a malformed V2 JSON body becomes a 400 with one readable line."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return JSONResponse(status_code=400,
                        content=_error_body("invalid V2 inference request: " + "; ".join(problems)))


def decode_binary_request(body: bytes, json_length: int, model_name: str) -> InferRequest:
    """Parses a V2 request with the binary tensor extension, keeping BYTES raw."""
    if not body:
        raise InvalidInput("empty request body; send a V2 inference request")
    if not 0 < json_length <= len(body):
        raise InvalidInput(f"{HEADER_LENGTH} is {json_length}, but the body has {len(body)} bytes")
    try:
        header = json.loads(body[:json_length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"the JSON part of the request is not valid JSON ({exc})") from exc
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput('the JSON part of the request needs an "inputs" list')
    offset = json_length
    inputs = []
    for i, spec in enumerate(header["inputs"]):
        if not isinstance(spec, dict) or not all(k in spec for k in ("name", "shape", "datatype")):
            raise InvalidInput(f"inputs[{i}] needs name, shape and datatype")
        if not isinstance(spec["shape"], list) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in spec["shape"]):
            raise InvalidInput(f"inputs[{i}]: shape must be a list of integers")
        params = spec.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput(f"inputs[{i}]: parameters must be an object")
        tensor = InferInput(name=str(spec["name"]), shape=spec["shape"],
                            datatype=str(spec["datatype"]), parameters=params)
        if "data" in spec:
            tensor.data = spec["data"]
        elif "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInput(f"inputs[{i}]: binary_data_size must be a non-negative integer")
            if offset + size > len(body):
                raise InvalidInput(f"inputs[{i}]: binary_data_size {size} runs past the end of "
                                   f"the body ({len(body) - offset} bytes left)")
            tensor._raw_data = body[offset:offset + size]
            offset += size
        else:
            raise InvalidInput(f"inputs[{i}] has neither data nor binary_data_size")
        inputs.append(tensor)
    if offset != len(body):
        raise InvalidInput(f"the body has {len(body) - offset} bytes that no input claims")
    outputs = header.get("outputs")
    requested = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
                isinstance(o, dict) and "name" in o for o in outputs):
            raise InvalidInput('"outputs" must be a list of objects with a name')
        requested = [RequestedOutput(name=o["name"], parameters=o.get("parameters"))
                     for o in outputs]
    params = header.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise InvalidInput('"parameters" must be an object')
    return InferRequest(model_name=model_name, infer_inputs=inputs, request_id=header.get("id"),
                        parameters=params, request_outputs=requested)


_original_decode = DataPlane.decode_inference_request


def _decode_inference_request(self: DataPlane, body: Any, headers: dict[str, str],
                              model_name: str) -> InferRequest:
    if isinstance(body, bytes):
        value = headers.get(HEADER_LENGTH)
        if value is None:  # no binary part: the whole body is the JSON request
            return decode_binary_request(body, len(body), model_name)
        try:
            length = int(value)
        except ValueError as exc:
            raise InvalidInput(f"{HEADER_LENGTH} must be an integer, got {value!r}") from exc
        return decode_binary_request(body, length, model_name)
    return _original_decode(self, body, headers, model_name)


def install(app: FastAPI, max_body_bytes: int,
            on_disconnect: Callable[[], None] | None = None) -> None:
    """Adds the guard, the error handlers and the binary-request fix."""
    DataPlane.decode_inference_request = _decode_inference_request
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes, on_disconnect=on_disconnect)
    app.add_exception_handler(ServiceError, service_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
