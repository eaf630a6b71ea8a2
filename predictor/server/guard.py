"""The ASGI middleware in front of every REST request (:class:`RequestGuard`).

It gives every request an id (``x-request-id``, kept when the client sent one),
inflates ``Content-Encoding: gzip`` / ``deflate`` bodies, refuses bodies over
``--max_body_bytes`` (inflated size included) with 413, cancels a request whose client
went away, counts refusals, and turns any unexpected exception into a 500 that names
the request id and keeps the connection usable. It reads the body once, so the routes
behind it (:mod:`predictor.server.rest_routes`) get it whole and already inflated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..protocol import RequestError, rest
from .served import REQUEST_ID

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
OnReject = Callable[[str], None]

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
