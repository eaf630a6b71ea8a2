"""What the web API answers when something fails, in one place.

Every failure becomes :class:`ApiError`: an HTTP status, one message that says what
happened and what to do, and sometimes a ``Retry-After``. The app turns it into
``{"error": "<message>"}``, or on the DeepStack routes (``/v1/...``) into that API's
own shape, ``{"success": false, "error": "<message>", "code": <status>}``
(:func:`error_body`); no traceback or internal text ever reaches the caller.

| the inference service ...                       | web API answers          | kind (metrics) |
|-------------------------------------------------|--------------------------|----------------|
| refused the picture or an option (400)          | 400, its own message     | bad_request    |
| is overloaded (429/503 + Retry-After), retries spent | 503 + Retry-After   | overloaded     |
| has its model loading (not ready)                | 503 + Retry-After        | not_ready      |
| cannot be reached (down, restarting, no route)   | 503 + Retry-After        | unreachable    |
| did not answer within ``--timeout``              | 504                      | timeout        |
| failed (500) or sent an unreadable answer        | 502                      | server_error   |
| refused this backend's credentials (401/403)     | 502                      | unauthorized   |
| has no model of that name (404)                  | 502                      | not_found      |
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from client import (
    BadRequest,
    ClientError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    RequestTimeout,
    ServerError,
    ServerUnreachable,
    Unauthorized,
    UnreadableInput,
)

__all__ = ["DEEPSTACK_PREFIX", "ERROR_KINDS", "ApiError", "error_body", "error_for_client",
           "error_kind"]

#: The ``kind`` label values of the error metric, one per row of the table above.
ERROR_KINDS = ("bad_request", "overloaded", "not_ready", "unreachable", "timeout",
               "server_error", "unauthorized", "not_found")

#: Paths under this prefix answer in the DeepStack / CodeProject.AI shape.
DEEPSTACK_PREFIX = "/v1/"

# Seconds a browser should wait before asking again when the service gave no figure.
_DEFAULT_RETRY_AFTER = 5


class ApiError(Exception):
    """A failure the API reports as ``{"error": message}`` with ``status``.

    Attributes:
        status: The HTTP status to answer with.
        message: What happened and what to do, for a person.
        headers: Extra response headers (``Retry-After``).
    """

    def __init__(self, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def error_body(path: str, status: int, message: str) -> dict[str, object]:
    """The JSON body of a failure on ``path``: the DeepStack shape under ``/v1/``.

    DeepStack answers ``{"success": false, "error": ...}`` (its server/response/response.go);
    CodeProject.AI adds ``code``, the HTTP status (its SDK's BackendErrorResponse).
    """
    if path.startswith(DEEPSTACK_PREFIX):
        return {"success": False, "error": message, "code": status}
    return {"error": message}


def error_kind(exc: ClientError) -> str:
    """The metric label for a failed call to the inference service."""
    if isinstance(exc, (BadRequest, UnreadableInput)):
        return "bad_request"
    if isinstance(exc, Overloaded):
        return "overloaded"
    if isinstance(exc, ModelNotReady):
        return "not_ready"
    if isinstance(exc, RequestTimeout):
        return "timeout"
    if isinstance(exc, ServerUnreachable):
        return "unreachable"
    if isinstance(exc, Unauthorized):
        return "unauthorized"
    if isinstance(exc, ModelNotFound):
        return "not_found"
    return "server_error"


def error_for_client(exc: ClientError, *, model: str, timeout: float,
                     retries: int) -> ApiError:
    """The API's answer for a failed call to the inference service.

    Args:
        exc: What the client raised (after its retries).
        model: The model name, for messages.
        timeout: The client's timeout in seconds, for messages.
        retries: How many retries the client made at most, for messages.
    """
    kind = error_kind(exc)
    tried = f" (tried {retries + 1} times)" if retries else ""
    if kind == "bad_request":
        detail = exc.message if isinstance(exc, BadRequest) else str(exc)
        return ApiError(400, f"the inference service refused the request: {detail}")
    if kind == "overloaded":
        wait = _retry_after(getattr(exc, "retry_after", None))
        return ApiError(503, f"the inference service is overloaded{tried}; try again in "
                             f"{wait} s", {"Retry-After": str(wait)})
    if kind == "not_ready":
        return ApiError(503, f"model {model!r} is not ready yet (loading or restarting)"
                             f"{tried}; try again in a moment",
                        {"Retry-After": str(_DEFAULT_RETRY_AFTER)})
    if kind == "timeout":
        return ApiError(504, f"the inference service did not answer within {timeout:g} s; "
                             f"try again, or a smaller picture")
    if kind == "unreachable":
        return ApiError(503, f"the inference service cannot be reached{tried}: it may be "
                             f"down or restarting; try again later",
                        {"Retry-After": str(_DEFAULT_RETRY_AFTER)})
    if kind == "unauthorized":
        return ApiError(502, "the inference service refused this backend's credentials; "
                             "the operator must check its --token")
    if kind == "not_found":
        return ApiError(502, f"the inference service has no model {model!r}; the operator "
                             f"must check --model and --url")
    status = exc.status if isinstance(exc, ServerError) else None
    what = f" (HTTP {status})" if isinstance(status, int) else ""
    return ApiError(502, f"the inference service failed{what}; try again, and tell the "
                         f"operator if it goes on")


def _retry_after(seconds: float | None) -> int:
    """Whole seconds for ``Retry-After``, at least 1."""
    if seconds is None or not math.isfinite(seconds):
        return _DEFAULT_RETRY_AFTER
    return max(1, math.ceil(seconds))
