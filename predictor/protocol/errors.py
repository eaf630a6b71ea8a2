"""The wire's own error, and the image-count check every request form shares.

A :class:`RequestError` means the request itself is malformed (as opposed to a bad
image, which :class:`predictor.pipeline.decode.DecodeError` reports further on). It
knows no transport: the server edge answers it with HTTP 400 ``{"error": ...}`` or gRPC
``INVALID_ARGUMENT`` (:mod:`predictor.server`).
"""

from __future__ import annotations


class RequestError(ValueError):
    """The request itself is malformed: wrong JSON shape, bad tensor, unknown output..."""


def check_count(count: int, limit: int, what: str) -> None:
    """Refuses an empty request and one over ``--max_images_per_request``."""
    if count == 0:
        raise RequestError(f"{what} is empty; send at least one image")
    if count > limit:
        raise RequestError(
            f"{what} has {count} images; the limit is {limit} per request "
            f"(--max_images_per_request)")
