"""Every error the client raises, in one tree.

::

    ClientError                  base class: catch this to catch them all
    ├── ConfigError              a setting is wrong (URL, protocol, CA file...); also a ValueError
    ├── UnreadableInput          an image the client cannot read or encode; also a ValueError
    ├── ServerUnreachable        no answer: connection refused, DNS, TLS, a gateway's 502/504
    │   └── RequestTimeout       the server took longer than the timeout
    └── ServerRejected           the server answered with an error; ``.status``, ``.message``
        ├── BadRequest           400 / INVALID_ARGUMENT: the server's message says what was wrong
        ├── Unauthorized         401, 403 / UNAUTHENTICATED, PERMISSION_DENIED
        ├── ModelNotFound        404 / NOT_FOUND: no model of that name
        ├── ModelNotReady        the model exists but is not ready (503 / UNAVAILABLE)
        ├── Overloaded           429, 503 with Retry-After / UNAVAILABLE, RESOURCE_EXHAUSTED
        └── ServerError          500 and other failures, or a response the client cannot parse

Retries (see ``ClientConfig.retries``) cover ``Overloaded``, ``ModelNotReady`` and
``ServerUnreachable`` other than ``RequestTimeout``; an error is raised once retries run out.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ClientError",
    "ConfigError",
    "ModelNotFound",
    "ModelNotReady",
    "Overloaded",
    "RequestTimeout",
    "ServerError",
    "ServerRejected",
    "ServerUnreachable",
    "Unauthorized",
    "UnreadableInput",
]


class ClientError(Exception):
    """Base class of every error this package raises."""


class ConfigError(ClientError, ValueError):
    """A client setting is invalid; the message says how to fix it."""


class UnreadableInput(ClientError, ValueError):
    """An input image could not be read, identified or encoded."""


class ServerUnreachable(ClientError):
    """The server could not be reached, or a gateway in front of it could not reach it."""


class RequestTimeout(ServerUnreachable):
    """The server did not answer within the timeout."""


class ServerRejected(ClientError):
    """The server answered with an error.

    Attributes:
        status: The HTTP status (``int``) or gRPC status code name (``str``).
        message: The server's own message, as sent.
    """

    def __init__(self, message: str, *, status: int | str | None = None,
                 detail: str | None = None) -> None:
        super().__init__(f"{message}: {detail}" if detail else message)
        self.status = status
        self.message = detail if detail is not None else message


class BadRequest(ServerRejected):
    """The server refused the request as invalid (HTTP 400, gRPC INVALID_ARGUMENT)."""


class Unauthorized(ServerRejected):
    """The server or a gateway refused the credentials (HTTP 401/403)."""


class ModelNotFound(ServerRejected):
    """The server has no model of that name (HTTP 404, gRPC NOT_FOUND)."""


class ModelNotReady(ServerRejected):
    """The model exists but is not ready to serve."""


class Overloaded(ServerRejected):
    """The server asked the client to come back later (HTTP 429/503, gRPC UNAVAILABLE).

    Attributes:
        retry_after: Seconds the server asked to wait, when it said.
    """

    def __init__(self, message: str, *, status: int | str | None = None,
                 detail: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status, detail=detail)
        self.retry_after = retry_after


class ServerError(ServerRejected):
    """The server failed, or sent a response the client cannot understand."""
