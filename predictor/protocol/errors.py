"""The wire's own error: a malformed request, as opposed to a bad image.

A :class:`RequestError` is a KServe ``InvalidInput``, so every transport answers it the
same way: HTTP 400 ``{"error": ...}`` and gRPC ``INVALID_ARGUMENT``. A picture that
cannot be decoded raises :class:`predictor.decode.DecodeError` instead, further on.
"""

from __future__ import annotations

from kserve.errors import InvalidInput


class RequestError(InvalidInput):  # type: ignore[misc]
    """The request itself is malformed: wrong JSON shape, bad tensor, unknown output..."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
