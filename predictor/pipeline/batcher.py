"""A generic async dynamic batcher: requests in, batches out, each caller its own results.

Items from any number of concurrent requests wait in one bounded queue. Each of
``workers`` workers (one by default) takes up to ``max_batch_size`` of them, waiting at
most ``max_delay_s`` for a batch to fill (only while every other worker is busy: with one
idle, waiting would add latency and nothing else), and runs them with ``run_batch`` in a
thread of its own. When a batch
fails it is split in halves and retried, so one bad item (or a batch too big for the
device) fails only the items that cannot succeed. Knows no torch and no KServe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue has no room; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int, *, by: str = "count",
                 queued: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.by = by  # "count" (items) or "cost" (summed item cost)
        self.queued = queued
        self.limit = limit


class DeadlineExceeded(Exception):
    """The request's deadline passed before its result was ready."""


class ShuttingDown(Exception):
    """The batcher is stopping and takes no new work."""


@dataclass(eq=False)  # identity: items are tracked in sets
class _Item(Generic[T]):
    payload: T
    future: asyncio.Future[Any]
    deadline: float
    cost: int = 1
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """What one batch did; handed to the ``on_batch`` observer."""

    size: int
    waits: list[float]
    run_seconds: float
    failed: int


class Batcher(Generic[T, R]):
    """Groups submitted items into batches run by ``run_batch`` in ``workers`` threads."""

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int = 8,
        max_delay_s: float = 0.005,
        max_queue_size: int = 256,
        on_batch: Callable[[BatchStats], None] | None = None,
        cost: Callable[[T], int] | None = None,
        max_batch_cost: int | None = None,
        max_queue_cost: int | None = None,
        workers: int = 1,
        group_key: Callable[[T], Hashable] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or max_delay_s < 0:
            raise ValueError("max_batch_size and max_queue_size must be >= 1, max_delay_s >= 0")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue_size = max_queue_size
        self._on_batch = on_batch
        self._cost = cost or (lambda _item: 1)
        self.max_batch_cost = max_batch_cost
        self.max_queue_cost = max_queue_cost
        self._queued_cost = 0
        self._queue: deque[_Item[T]] = deque()
        self._wakeup: asyncio.Event | None = None
        self.workers = max(1, workers)
        self._group_key = group_key
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = ThreadPoolExecutor(max_workers=self.workers,
                                            thread_name_prefix="inference")
        self._accepting = True
        self._in_flight = 0
        self._batches_running = 0
        self._running: set[_Item[T]] = set()  # items the worker threads are running now
        self._batch_seconds = 0.0  # moving average, for Retry-After
        # Inference slots shared with other batchers (one per model in a repository): a
        # formed batch waits for a slot; asyncio wakes waiters first come, first served, so
        # the models' queues take turns on one pool of workers.
        self.gate: asyncio.Semaphore | None = None

    @property
    def depth(self) -> int:
        """Items waiting in the queue (not yet in a running batch)."""
        return len(self._queue)

    @property
    def busy(self) -> int:
        """Items queued or running."""
        return len(self._queue) + self._in_flight

    def start(self) -> None:
        """Starts the workers on the running event loop; idempotent."""
        if not self._tasks or all(t.done() for t in self._tasks):
            self._wakeup = asyncio.Event()
            self._accepting = True
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._work()) for _ in range(self.workers)]

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Takes no new items, lets queued ones finish (up to ``timeout_s``), then stops."""
        self._accepting = False
        end = time.monotonic() + timeout_s
        while self.busy and time.monotonic() < end:
            await asyncio.sleep(0.01)
        running = list(self._running)  # the workers' finally clears it as they are cancelled
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # A batch still running past the timeout is abandoned with the queue: its
        # callers get an answer instead of waiting on futures no one will resolve.
        for item in [*running, *self._queue]:
            if not item.future.done():
                item.future.set_exception(ShuttingDown("the server is shutting down"))
        self._queue.clear()
        self._queued_cost = 0

    def close(self) -> None:
        """Lets the worker threads go; call after :meth:`stop` when the batcher is done for."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def retry_after(self) -> int:
        """Seconds a rejected caller should wait: the time to drain the current queue."""
        batches = math.ceil(self.busy / self.max_batch_size)
        return max(1, math.ceil(batches * self._batch_seconds))

    async def submit(self, payloads: Sequence[T], timeout_s: float | None = None) -> list[R]:
        """Queues ``payloads`` as one request and waits for all their results.

        Raises QueueFull when there is no room for all of them, DeadlineExceeded when
        ``timeout_s`` passes first, or the exception of the first item that failed.
        """
        if not self._accepting:
            raise ShuttingDown("the server is shutting down and takes no new requests")
        if not payloads:
            return []
        if not self._tasks:
            self.start()
        if self._queue and len(self._queue) + len(payloads) > self.max_queue_size:
            raise QueueFull(
                f"server busy: {len(self._queue)} items queued, the limit is "
                f"{self.max_queue_size}",
                self.retry_after(), by="count", queued=len(self._queue),
                limit=self.max_queue_size,
            )
        costs = [self._cost(p) for p in payloads]
        if (self._queue and self.max_queue_cost is not None
                and self._queued_cost + sum(costs) > self.max_queue_cost):
            raise QueueFull(
                f"server busy: the queued work ({self._queued_cost}) would pass the limit "
                f"({self.max_queue_cost})",
                self.retry_after(), by="cost", queued=self._queued_cost,
                limit=self.max_queue_cost,
            )
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout_s if timeout_s else math.inf
        items = [_Item(p, loop.create_future(), deadline, c)
                 for p, c in zip(payloads, costs, strict=True)]
        self._queue.extend(items)
        self._queued_cost += sum(costs)
        assert self._wakeup is not None
        self._wakeup.set()
        futures = [item.future for item in items]
        try:
            done, pending = await asyncio.wait(
                futures, timeout=timeout_s or None, return_when=asyncio.FIRST_EXCEPTION
            )
        except asyncio.CancelledError:  # the caller went away: free the queue slots
            for fut in futures:
                fut.cancel()
            raise
        for fut in done:
            if fut.exception() is not None:
                for other in pending:
                    other.cancel()
                raise fut.exception()  # type: ignore[misc]
        if pending:
            for fut in pending:
                fut.cancel()
            raise DeadlineExceeded(f"request timed out after {timeout_s:g} s in the queue")
        return [fut.result() for fut in futures]

    async def _next_batch(self) -> list[_Item[T]]:
        assert self._wakeup is not None
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        # Wait for a fuller batch only when no other worker could take the next items.
        delay = self.max_delay_s if self._batches_running >= self.workers - 1 else 0.0
        end = time.monotonic() + delay
        while len(self._queue) < self.max_batch_size:
            left = end - time.monotonic()
            if left <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                break
        if self._group_key is not None:
            self._group_front()
        batch: list[_Item[T]] = []
        batch_cost = 0
        now = time.monotonic()
        while self._queue and len(batch) < self.max_batch_size:
            if (batch and self.max_batch_cost is not None
                    and batch_cost + self._queue[0].cost > self.max_batch_cost):
                break
            item = self._queue.popleft()
            self._queued_cost -= item.cost
            if item.future.done():  # cancelled: the caller left or a batch-mate failed
                continue
            if item.deadline <= now:
                item.future.set_exception(DeadlineExceeded("request timed out in the queue"))
                continue
            batch.append(item)
            batch_cost += item.cost
        return batch

    def _group_front(self) -> None:
        """Moves up to a batch of items that share the oldest item's group to the front.

        Only a window of the queue is looked at, the oldest item always leads, and the
        others keep their order, so no item waits more than one batch longer than FIFO.
        """
        assert self._group_key is not None
        window = min(len(self._queue), self.max_batch_size * 4)
        if window < 2:
            return
        items = [self._queue.popleft() for _ in range(window)]
        head = self._group_key(items[0].payload)
        chosen = [it for it in items if self._group_key(it.payload) == head]
        chosen = chosen[: self.max_batch_size]
        taken = set(chosen)
        rest = [it for it in items if it not in taken]  # the others keep their order
        self._queue.extendleft(reversed(chosen + rest))

    def _run_split(self, payloads: list[T]) -> list[R | BaseException]:
        """Runs a batch; on failure retries its halves so only failing items fail."""
        try:
            results = list(self._run_batch(payloads))
            if len(results) != len(payloads):
                raise RuntimeError(f"run_batch returned {len(results)} results for "
                                   f"{len(payloads)} items")
            return list(results)
        except Exception as exc:
            if len(payloads) == 1:
                return [exc]
            log.warning("batch of %d failed (%s: %s); retrying in halves", len(payloads),
                        type(exc).__name__, exc)
            half = len(payloads) // 2
            return self._run_split(payloads[:half]) + self._run_split(payloads[half:])

    async def _run_gated(self, loop: asyncio.AbstractEventLoop, payloads: list[T]
                         ) -> list[R | BaseException]:
        if self.gate is None:
            return await loop.run_in_executor(self._executor, self._run_split, payloads)
        async with self.gate:
            return await loop.run_in_executor(self._executor, self._run_split, payloads)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            self._in_flight += len(batch)
            self._batches_running += 1
            self._running.update(batch)
            started = time.monotonic()
            try:
                results = await self._run_gated(loop, [it.payload for it in batch])
            except Exception as exc:  # the executor itself failed: fail this batch only
                results = [exc] * len(batch)
            finally:
                self._in_flight -= len(batch)
                self._batches_running -= 1
                self._running.difference_update(batch)
            elapsed = time.monotonic() - started
            self._batch_seconds = elapsed if not self._batch_seconds else (
                0.8 * self._batch_seconds + 0.2 * elapsed)
            failed = 0
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    failed += 1
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
            if self._on_batch is not None:
                try:
                    self._on_batch(BatchStats(len(batch), [started - it.enqueued for it in batch],
                                              elapsed, failed))
                except Exception:  # metrics must never stop the worker
                    log.exception("on_batch observer failed")
