"""The ASGI middleware in front of every REST request (:class:`RequestGuard`).

It gives every request an id (``x-request-id``, kept when the client sent one),
refuses a request head (request line and headers) over ``--max_header_bytes`` with 431,
inflates ``Content-Encoding: gzip`` / ``deflate`` bodies, refuses bodies over
``--max_body_bytes`` (inflated size included) with 413, cancels a request whose client
went away, counts refusals, and turns any unexpected exception into a 500 that names
the request id and keeps the connection usable.

The log gets one line per client mistake (any 4xx: request id, route, status, the error
it was answered with) and no traceback; a traceback is for a 500, logged where it is
caught. It reads the body once, so the routes
behind it (:mod:`predictor.server.rest_routes`) get it whole and already inflated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Limits
from ..protocol import RequestError, rest
from .served import REQUEST_ID, log_refusal

log = logging.getLogger(__name__)

OnReject = Callable[[str], None]

_REASONS = {400: "invalid", 413: "too_large", 415: "invalid", 431: "too_large"}
# Set by the parser cap (predictor.server.compat) on a head it stopped reading.
HEAD_CUT = b"x-detector-head-cut"


def head_bytes(scope: Scope) -> int:
    """Bytes of a request's head as the client sent it: request line and header lines."""
    line = len(scope.get("method", "")) + len(scope.get("raw_path") or b"") \
        + len(scope.get("query_string") or b"") + 12
    return line + sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or ())


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")


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
                 on_disconnect: Callable[[], None] | None = None,
                 max_header_bytes: int = Limits.max_header_bytes) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.on_reject = on_reject
        self.on_disconnect = on_disconnect

    def _too_large(self, size: str) -> str:
        return (f"request body is {size} bytes; the limit is {self.max_body_bytes} bytes "
                f"(--max_body_bytes)")

    async def _refuse(self, send: Send, scope: Scope, status: int, message: str,
                      request_id: str) -> None:
        if self.on_reject is not None and status in _REASONS:
            self.on_reject(_REASONS[status])
        log_refusal(request_id, _route(scope), status, message)
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
        head = head_bytes(scope)
        if HEAD_CUT in headers or head > self.max_header_bytes:
            size = f"more than {self.max_header_bytes}" if HEAD_CUT in headers else str(head)
            await self._refuse(send, scope, 431, (
                f"request line and headers are {size} bytes; the limit is {self.max_header_bytes} "
                f"bytes "
                f"(--max_header_bytes)"), request_id)
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(send, scope, 413, self._too_large(declared.decode()), request_id)
            return
        encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
        inflater = None
        if encoding not in ("", "identity"):
            if not rest.Inflater.supported(encoding):
                await self._refuse(send, scope, 415,
                                   f"Content-Encoding {encoding!r} is not supported; send "
                                   f"gzip, deflate or an uncompressed body", request_id)
                return
            inflater = rest.Inflater(encoding, self.max_body_bytes)
        body = await self._read_body(receive, inflater)
        if body is None:
            return
        if isinstance(body, tuple):
            await self._refuse(send, scope, *body, request_id)
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
        refused: list[bytes] = []  # a 4xx answer's body, for its log line
        status = 0

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                state["started"] = True
                status = int(message["status"])
                if self.on_reject is not None and status in _REASONS:
                    self.on_reject(_REASONS[status])
                message = {**message, "headers": [*message.get("headers", []),
                                                  (REQUEST_ID.encode(), request_id.encode())]}
            elif message["type"] == "http.response.body":
                if 400 <= status < 500:
                    refused.append(message.get("body", b""))
                if not message.get("more_body"):
                    state["finished"] = True
                    if 400 <= status < 500:
                        log_refusal(request_id, _route(scope), status,
                                    _error_text(b"".join(refused)))
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


def _route(scope: Scope) -> str:
    return f"{scope.get('method', '?')} {scope.get('path', '?')}"
