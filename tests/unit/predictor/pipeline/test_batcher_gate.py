"""batcher: batchers sharing a gate (one model each) take turns on its inference slots."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from predictor.pipeline.batcher import Batcher
from tests.support.batching import run


def test_two_models_take_turns_on_one_slot() -> None:
    """A model with a long queue does not run all its batches before the other's first."""
    order: list[str] = []
    lock = threading.Lock()

    def runner(name: str) -> Any:
        def run_batch(batch: list[int]) -> list[int]:
            time.sleep(0.01)
            with lock:
                order.append(name)
            return batch
        return run_batch

    async def main() -> None:
        gate = asyncio.Semaphore(1)
        busy = Batcher(runner("busy"), max_batch_size=1, max_delay_s=0.0)
        quiet = Batcher(runner("quiet"), max_batch_size=1, max_delay_s=0.0)
        busy.gate = quiet.gate = gate
        flood = asyncio.ensure_future(busy.submit(list(range(8))))
        await asyncio.sleep(0.025)  # the busy model's queue is long by now
        await quiet.submit([1, 2])
        await flood
        await busy.stop()
        await quiet.stop()
        busy.close()
        quiet.close()

    run(main())
    assert order.count("busy") == 8
    first_quiet = order.index("quiet")
    assert first_quiet <= 3, order  # FIFO would have run all 8 busy batches first
    assert order.index("quiet", first_quiet + 1) <= first_quiet + 2, order


def test_without_a_gate_batchers_run_at_once() -> None:
    started = threading.Barrier(2, timeout=5)

    def run_batch(batch: list[int]) -> list[int]:
        started.wait()  # both batchers' batches must be running together to pass
        return batch

    async def main() -> None:
        a = Batcher(run_batch, max_batch_size=1, max_delay_s=0.0)
        b = Batcher(run_batch, max_batch_size=1, max_delay_s=0.0)
        assert await asyncio.gather(a.submit([1]), b.submit([2])) == [[1], [2]]
        await a.stop()
        await b.stop()

    run(main())
