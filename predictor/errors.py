"""The server's own errors, each with one HTTP status and one gRPC status.

    InvalidInput (KServe's)   400 / INVALID_ARGUMENT   bad image, bad parameter, limit
    ServiceError              base of the ones below; carries http_status
      Overloaded              503 + Retry-After / UNAVAILABLE   queue full
      ShuttingDownError       503 + Retry-After / UNAVAILABLE   SIGTERM received
      TimedOut                504 / DEADLINE_EXCEEDED           deadline passed in the queue
      InternalError           500 / INTERNAL                    a bug; details only in the log

KServe's gRPC interceptor turns any ``GrpcException`` into its status code; the REST
handler for ``ServiceError`` is registered by :mod:`predictor.http`.
"""

from __future__ import annotations

from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException
from kserve.errors import InvalidInput

__all__ = ["InternalError", "InvalidInput", "Overloaded", "ServiceError", "ShuttingDownError",
           "TimedOut"]


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
