"""A scripted ``run_batch`` for the batcher's tests, and a way to run their coroutines."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any


class Recorder:
    """A run_batch that records every batch it ran and can be held at a gate."""

    def __init__(self, fn: Callable[[Any], Any] = lambda p: ("done", p),
                 fail: Callable[[list[Any]], Exception | None] = lambda batch: None) -> None:
        self.fn = fn
        self.fail = fail
        self.batches: list[list[Any]] = []  # the batches that ran to the end
        self.attempts: list[list[Any]] = []  # every call, failed ones too
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch: list[Any]) -> Sequence[Any]:
        self.attempts.append(list(batch))
        self.entered.set()
        self.gate.wait(10)
        error = self.fail(batch)
        if error is not None:
            raise error
        self.batches.append(list(batch))
        return [self.fn(p) for p in batch]

    @property
    def seen(self) -> list[Any]:
        return [p for batch in self.attempts for p in batch]

    def hold(self) -> None:
        self.gate.clear()
        self.entered.clear()

    async def wait_entered(self) -> None:
        for _ in range(500):
            if self.entered.is_set():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("run_batch was never called")


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))
