"""When to try a call again, and how long to wait first.

Retried: ``Overloaded`` (429, 503 with Retry-After, gRPC UNAVAILABLE/RESOURCE_EXHAUSTED),
``ModelNotReady`` and ``ServerUnreachable`` (refused connections, a gateway's 502/504).
Never retried: bad requests, unknown models, credentials, server errors, and timeouts,
which already cost the caller the whole timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ._config import ClientConfig
from ._exceptions import (
    ClientError,
    ModelNotReady,
    Overloaded,
    RequestTimeout,
    ServerUnreachable,
)

__all__ = ["delay_before_retry", "is_retryable", "retry_async", "retry_sync"]

T = TypeVar("T")


def is_retryable(exc: ClientError) -> bool:
    """Whether another attempt may succeed where this one failed."""
    if isinstance(exc, RequestTimeout):
        return False
    return isinstance(exc, (Overloaded, ModelNotReady, ServerUnreachable))


def delay_before_retry(exc: ClientError, attempt: int, config: ClientConfig) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    The server's ``Retry-After`` wins when it gave one; otherwise the wait doubles from
    ``config.backoff``. Both are capped at ``config.max_backoff``.
    """
    retry_after = getattr(exc, "retry_after", None)
    delay = retry_after if retry_after is not None else config.backoff * (2 ** attempt)
    return float(min(delay, config.max_backoff))


def retry_sync(
    call: Callable[[], T], config: ClientConfig, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Runs ``call``, retrying retryable failures up to ``config.retries`` times."""
    attempt = 0
    while True:
        try:
            return call()
        except ClientError as exc:
            if attempt >= config.retries or not is_retryable(exc):
                raise
            sleep(delay_before_retry(exc, attempt, config))
            attempt += 1


async def retry_async(
    call: Callable[[], Awaitable[T]],
    config: ClientConfig,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """The async twin of :func:`retry_sync`."""
    attempt = 0
    while True:
        try:
            return await call()
        except ClientError as exc:
            if attempt >= config.retries or not is_retryable(exc):
                raise
            await sleep(delay_before_retry(exc, attempt, config))
            attempt += 1
