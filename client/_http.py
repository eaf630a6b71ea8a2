"""What REST calls share: the request and answer, error mapping, Retry-After, the codec base.

The protocol codecs (``_v1``, ``_v2rest``, on :class:`RestCodec`) build
:class:`HttpRequest` objects and read :class:`HttpAnswer` objects; the transports in
``_transport`` only move bytes. That keeps the wire formats testable without a server
and the two clients free of duplicated protocol logic.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._config import ClientConfig
from ._exceptions import (
    BadRequest,
    ClientError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    RequestTimeout,
    ServerError,
    ServerUnreachable,
    Unauthorized,
)
from ._types import DetectOptions, Health, ImageResult, ModelMetadata, TensorSpec

if TYPE_CHECKING:
    from ._images import PreparedImage

__all__ = [
    "MODEL_VERSION_HEADER",
    "HttpAnswer",
    "HttpRequest",
    "RestCodec",
    "error_for_status",
    "error_for_transport",
    "http_settings",
    "model_version_header",
    "parse_json",
    "retry_after_seconds",
    "tls_verify",
]

USER_AGENT = "detect-client/0.1"
# The server names the model version that answered in every REST inference response.
MODEL_VERSION_HEADER = "x-model-version"


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request, relative to the client's base URL."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None


@dataclass(frozen=True)
class HttpAnswer:
    """One HTTP answer, whatever its status: what a transport hands back to a codec."""

    status: int
    headers: Mapping[str, str]
    content: bytes


def parse_json(content: bytes, what: str) -> Any:
    """Decodes a JSON body; a body that is not JSON is a ServerError."""
    try:
        return json.loads(content)
    except (UnicodeDecodeError, ValueError):
        snippet = content[:80].decode("utf-8", errors="replace")
        raise ServerError(f"{what}: the server sent a body that is not JSON: {snippet!r}") from None


def model_version_header(headers: Mapping[str, str]) -> str | None:
    """The ``x-model-version`` header's value; None when absent or empty."""
    value = headers.get(MODEL_VERSION_HEADER) or headers.get(MODEL_VERSION_HEADER.title())
    return (value.strip() or None) if value else None


def server_message(content: bytes) -> str:
    """The error message in a body: ``{"error": ...}``, FastAPI's ``detail``, or the text."""
    try:
        body = json.loads(content)
    except (UnicodeDecodeError, ValueError):
        return content[:300].decode("utf-8", errors="replace").strip()
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if key in body:
                value = body[key]
                return value if isinstance(value, str) else json.dumps(value)
    return json.dumps(body)[:300]


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delay-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_for_status(
    status: int, headers: Mapping[str, str], content: bytes, *, what: str, model: str
) -> ClientError:
    """The exception for an HTTP error response; ``what`` names the call, e.g. ``infer``."""
    message = server_message(content)
    where = f"{what} on model {model!r}"
    if status in (400, 413, 422):
        return BadRequest(f"{where}: the server refused the request", status=status,
                          detail=message)
    if status in (401, 403):
        return Unauthorized(
            f"{where}: HTTP {status}, the server refused the credentials (check --token)",
            status=status, detail=message or None)
    if status == 404:
        return ModelNotFound(
            f"{where}: HTTP 404, the server has no such model (check --model and --url)",
            status=status, detail=message or None)
    retry_after = retry_after_seconds(headers.get("retry-after"))
    if status == 429 or (status == 503 and retry_after is not None):
        return Overloaded(f"{where}: the server is overloaded (HTTP {status})", status=status,
                          detail=message or None, retry_after=retry_after)
    if status == 503:
        if "not ready" in message.lower():
            return ModelNotReady(f"{where}: the model is not ready", status=status,
                                 detail=message)
        return Overloaded(f"{where}: the service is unavailable (HTTP 503)", status=status,
                          detail=message or None)
    if status in (502, 504):
        return ServerUnreachable(
            f"{where}: a gateway answered HTTP {status}: it could not reach the model server"
        )
    return ServerError(f"{where}: the server failed with HTTP {status}", status=status,
                       detail=message or None)


def error_for_transport(exc: Exception, url: str, timeout: float) -> ClientError:
    """The exception for an httpx transport error (no HTTP response at all)."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        if isinstance(exc, httpx.ConnectTimeout):
            return ServerUnreachable(f"cannot connect to {url}: timed out after {timeout:g}s")
        return RequestTimeout(f"no answer from {url} within {timeout:g}s (raise --timeout)")
    reason = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in reason or "SSL" in reason:
        return ServerUnreachable(f"TLS handshake with {url} failed: {reason} (check --ca-file)")
    if isinstance(exc, httpx.ConnectError):
        return ServerUnreachable(f"cannot connect to {url}: {_short(reason)}")
    return ServerUnreachable(f"connection to {url} failed: {_short(reason)}")


def http_settings(config: ClientConfig) -> dict[str, Any]:
    """Keyword arguments for ``httpx.Client`` / ``httpx.AsyncClient`` under ``config``."""
    return {"base_url": config.url,
            "headers": {"User-Agent": USER_AGENT, **config.auth_headers()},
            "timeout": config.timeout, "verify": tls_verify(config)}


def tls_verify(config: ClientConfig) -> Any:
    """httpx's ``verify``: a context trusting ``config.ca_file``, or the system store."""
    if config.ca_file is None:
        return True
    import ssl

    return ssl.create_default_context(cafile=config.ca_file)


def _short(reason: str) -> str:
    # httpx wraps OS errors as "[Errno 111] Connection refused"; keep the human part.
    return reason.split("] ", 1)[-1] if reason.startswith("[Errno") else reason


class RestCodec:
    """What V1 and V2 REST share: the answer's status, health and metadata.

    A subclass says how to write an inference request (:meth:`infer_request`) and how
    to read a 200 answer to it (:meth:`infer_response`). KServe serves
    ``GET /v2/models/{name}`` whatever protocol the model speaks, so both protocols read
    metadata there. No I/O: requests out, answers in.
    """

    ready_path_template = "/v2/models/{model}/ready"

    def __init__(self, model: str) -> None:
        self.model = model

    def infer_request(self, images: Sequence[PreparedImage], options: DetectOptions
                      ) -> HttpRequest:
        """The inference request for one batch."""
        raise NotImplementedError

    def infer_response(self, headers: Mapping[str, str], content: bytes,
                       images: Sequence[PreparedImage]) -> list[ImageResult]:
        """The per-image results in a 200 answer's headers and body."""
        raise NotImplementedError

    def infer_results(self, answer: HttpAnswer, images: Sequence[PreparedImage]
                      ) -> list[ImageResult]:
        """The detections of an answer; an error status raises its error."""
        if answer.status != 200:
            raise error_for_status(answer.status, answer.headers, answer.content,
                                   what="infer", model=self.model)
        return self.infer_response(answer.headers, answer.content, images)

    def ready_request(self) -> HttpRequest:
        """A request whose answer tells whether the model is ready."""
        return HttpRequest("GET", self.ready_path_template.format(model=self.model))

    def health(self, answer: HttpAnswer) -> Health:
        """Health from the ready call: any answer means live; 200 means ready."""
        if answer.status == 200:
            try:
                body = json.loads(answer.content) if answer.content else {}
            except (UnicodeDecodeError, ValueError):
                body = {}
            ready = body.get("ready", True) if isinstance(body, dict) else True
            return Health(live=True, ready=ready is True or ready == "True")
        if (answer.status == 503
                and retry_after_seconds(answer.headers.get("retry-after")) is None):
            return Health(live=True, ready=False)
        raise error_for_status(answer.status, answer.headers, answer.content, what="health",
                               model=self.model)

    def metadata_request(self) -> HttpRequest:
        """``GET /v2/models/{name}``."""
        return HttpRequest("GET", f"/v2/models/{self.model}")

    def metadata(self, answer: HttpAnswer) -> ModelMetadata:
        """The metadata answer; an error status raises its error."""
        if answer.status != 200:
            raise error_for_status(answer.status, answer.headers, answer.content,
                                   what="metadata", model=self.model)
        body = parse_json(answer.content, "metadata")
        try:
            return ModelMetadata(
                name=str(body["name"]),
                platform=str(body.get("platform", "")),
                versions=tuple(str(v) for v in body.get("versions") or ()),
                inputs=tuple(_spec(t) for t in body.get("inputs") or ()),
                outputs=tuple(_spec(t) for t in body.get("outputs") or ()),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ServerError(f"metadata: the server's answer is malformed ({exc!r})") from None


def _spec(item: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(name=str(item["name"]), datatype=str(item["datatype"]),
                      shape=tuple(int(d) for d in item.get("shape") or ()))
