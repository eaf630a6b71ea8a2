"""The server's own errors, each with one HTTP status and one gRPC status.

    InvalidInput (KServe's)   400 / INVALID_ARGUMENT   bad image, bad parameter, limit
    ServiceError              base of the ones below; carries http_status
      Overloaded              503 + Retry-After / UNAVAILABLE   queue full
      ShuttingDownError       503 + Retry-After / UNAVAILABLE   SIGTERM received
      TimedOut                504 / DEADLINE_EXCEEDED           deadline passed in the queue
      InternalError           500 / INTERNAL                    a bug; details only in the log
      NotFound                404 / NOT_FOUND                   a model not served
        VersionNotFound       404 / NOT_FOUND                   a model version not served
      BadRequest              400 / INVALID_ARGUMENT            gRPC's form of InvalidInput
      NotReady                503 / UNAVAILABLE                 the model is not ready yet

A malformed request raises :class:`predictor.protocol.RequestError`, answered like InvalidInput.
KServe's gRPC interceptor turns any ``GrpcException`` into its status code; the REST
handler for ``ServiceError`` is registered by :mod:`predictor.server.rest_routes`.
"""

from __future__ import annotations

from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException
from kserve.errors import InvalidInput

__all__ = ["BadRequest", "InternalError", "InvalidInput", "NotFound", "NotReady", "Overloaded",
           "ServiceError", "ShuttingDownError", "TimedOut", "VersionNotFound", "client_error"]


class ServiceError(GrpcException):
    """An error with a fixed HTTP status, gRPC status and an optional Retry-After."""

    http_status = 500

    def __init__(self, details: str, retry_after: int | None = None) -> None:
        super().__init__(details)
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.details


class Overloaded(ServiceError):
    """The queue is full."""

    status_code = StatusCode.UNAVAILABLE
    http_status = 503


class ShuttingDownError(ServiceError):
    """The server is draining before it exits."""

    status_code = StatusCode.UNAVAILABLE
    http_status = 503


class TimedOut(ServiceError):
    """The request's deadline passed before it ran."""

    status_code = StatusCode.DEADLINE_EXCEEDED
    http_status = 504


class InternalError(ServiceError):
    """Something failed inside the server; the caller gets no internals."""

    status_code = StatusCode.INTERNAL
    http_status = 500


class NotFound(ServiceError):
    """The request named a model this server does not serve."""

    status_code = StatusCode.NOT_FOUND
    http_status = 404


class VersionNotFound(NotFound):
    """The request named a model version this server does not serve."""


class BadRequest(ServiceError):
    """A client's mistake, answered over gRPC without KServe's traceback in the log."""

    status_code = StatusCode.INVALID_ARGUMENT
    http_status = 400


class NotReady(ServiceError):
    """The model is loading or draining."""

    status_code = StatusCode.UNAVAILABLE
    http_status = 503


def client_error(exc: Exception) -> tuple[str | None, ServiceError] | None:
    """An error the server knows as (metric reason or None, error); None for a surprise.

    Covers this server's errors and KServe's own (bad input, unknown or unready model),
    so that each transport answers them alike and logs one line, never a traceback.
    """
    from kserve.errors import ModelNotFound, ModelNotReady

    from .protocol import RequestError

    if isinstance(exc, ServiceError):  # already worded; a 5xx was logged where it arose
        return None, exc
    if isinstance(exc, InvalidInput | RequestError):
        return "invalid", BadRequest(str(exc))
    if isinstance(exc, ModelNotFound):
        return None, NotFound(str(exc))
    if isinstance(exc, ModelNotReady):
        return None, NotReady(str(exc), retry_after=1)
    return None
