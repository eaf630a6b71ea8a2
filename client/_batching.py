"""Helpers both clients share: normalising the image argument, batching, wait errors."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Any

from ._exceptions import ClientError, ModelNotFound, ModelNotReady, Overloaded, ServerUnreachable
from ._types import ImageInput

__all__ = ["as_image_list", "chunks", "wait_ready_error"]


def as_image_list(images: ImageInput | Iterable[ImageInput]) -> Iterable[Any]:
    """The ``images`` argument as an iterable of single images.

    One image (a path, bytes, a PIL image, an ``H x W x 3`` array) becomes a list of one;
    a ``B x H x W x 3`` array becomes ``B`` images; any other iterable is kept lazy.
    """
    value: Any = images
    if isinstance(value, (str, os.PathLike, bytes, bytearray, memoryview)):
        return [value]
    ndim = getattr(value, "ndim", None)
    if ndim is not None:
        return list(value) if ndim == 4 else [value]
    if hasattr(value, "getpixel") or not isinstance(value, Iterable):
        return [value]  # a PIL image (checked without importing PIL), or a lone object
    return value


def chunks(items: Iterable[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    """Consecutive lists of at most ``size`` items, each with the index of its first."""
    iterator = iter(items)
    start = 0
    while True:
        batch = list(itertools.islice(iterator, size))
        if not batch:
            return
        yield start, batch
        start += len(batch)


def wait_ready_error(last: Exception, timeout: float) -> ClientError:
    """The error ``wait_ready`` raises when time runs out, keeping the last probe's kind."""
    message = f"not ready after {timeout:g}s; last check: {last}"
    if isinstance(last, ModelNotFound):
        return ModelNotFound(message, status=last.status)
    if isinstance(last, ServerUnreachable):
        return ServerUnreachable(message)
    if isinstance(last, Overloaded):
        return Overloaded(message, status=last.status)
    return ModelNotReady(message)
