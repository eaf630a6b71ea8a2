"""batcher: batches form, wait at most the delay, respect the queue's limits and deadlines."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from predictor.pipeline import batcher as batching
from predictor.pipeline.batcher import Batcher, DeadlineExceeded, QueueFull
from tests.support.batching import Recorder, run

# ---- batch formation and delay -----------------------------------------------------

def test_batches_fill_up_to_max_batch_size():
    rec = Recorder()

    async def main() -> list[list[Any]]:
        b = Batcher(rec, max_batch_size=4, max_delay_s=0.05)
        results = await asyncio.gather(*(b.submit([i]) for i in range(10)))
        await b.stop()
        return results

    results = run(main())
    assert results == [[("done", i)] for i in range(10)]
    assert [len(batch) for batch in rec.batches] == [4, 4, 2]


def test_one_request_larger_than_a_batch_is_split_over_batches():
    rec = Recorder()

    async def main() -> list[Any]:
        b = Batcher(rec, max_batch_size=3, max_delay_s=0.0)
        out = await b.submit(list(range(7)))
        await b.stop()
        return out

    assert run(main()) == [("done", i) for i in range(7)]
    assert all(len(batch) <= 3 for batch in rec.batches)
    assert sorted(p for batch in rec.batches for p in batch) == list(range(7))


def test_a_lone_request_runs_after_the_delay_not_later():
    rec = Recorder()

    async def main() -> float:
        b = Batcher(rec, max_batch_size=8, max_delay_s=0.25)
        start = time.perf_counter()
        await b.submit(["only"])
        elapsed = time.perf_counter() - start
        await b.stop()
        return elapsed

    elapsed = run(main())
    assert 0.24 <= elapsed < 0.75  # at most 3x the delay: slack for a shared, busy CPU
    assert rec.batches == [["only"]]


def test_a_full_batch_does_not_wait_for_the_delay():
    rec = Recorder()

    async def main() -> float:
        b = Batcher(rec, max_batch_size=2, max_delay_s=5.0)
        start = time.perf_counter()
        await b.submit(["a", "b"])
        elapsed = time.perf_counter() - start
        await b.stop()
        return elapsed

    assert run(main()) < 2.0


def test_a_lone_request_does_not_wait_while_another_worker_is_idle():
    # Two workers, both idle: waiting 5 s for a fuller batch would only add latency.
    rec = Recorder()

    async def main() -> float:
        b = Batcher(rec, max_batch_size=8, max_delay_s=5.0, workers=2)
        start = time.perf_counter()
        await b.submit(["only"])
        elapsed = time.perf_counter() - start
        await b.stop()
        return elapsed

    assert run(main()) < 2.0
    assert rec.batches == [["only"]]


def test_the_last_idle_worker_still_waits_for_a_batch_to_fill():
    # One of two workers is busy: the other waits up to the delay and takes a full batch.
    rec = Recorder()

    async def main() -> list[list[Any]]:
        b = Batcher(rec, max_batch_size=3, max_delay_s=5.0, workers=2)
        rec.hold()
        first = asyncio.ensure_future(b.submit(["busy"]))
        await rec.wait_entered()  # worker 1 is running "busy" and stays there
        later = [asyncio.ensure_future(b.submit([x])) for x in ("a", "b")]
        await asyncio.sleep(0.3)
        assert not any(f.done() for f in later)  # worker 2 waits: its batch is not full
        later.append(asyncio.ensure_future(b.submit(["c"])))  # now it is
        rec.gate.set()
        await asyncio.gather(first, *later)
        await b.stop()
        return rec.batches

    batches = run(main())
    assert sorted(map(sorted, batches)) == [["a", "b", "c"], ["busy"]]


def test_empty_submit_returns_nothing():
    rec = Recorder()

    async def main() -> list[Any]:
        b = Batcher(rec)
        return await b.submit([])

    assert run(main()) == []
    assert rec.attempts == []


# ---- queue limits ------------------------------------------------------------------

def test_queue_full_raises_with_retry_after():
    rec = Recorder()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=1, max_delay_s=0.0, max_queue_size=2)
        rec.hold()
        first = asyncio.ensure_future(b.submit(["running"]))
        await rec.wait_entered()
        queued = [asyncio.ensure_future(b.submit([f"q{i}"])) for i in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match=r"2 items queued, the limit is 2") as info:
            await b.submit(["refused"])
        assert (info.value.by, info.value.queued, info.value.limit) == ("count", 2, 2)
        assert info.value.retry_after >= 1
        assert isinstance(info.value.retry_after, int)
        rec.gate.set()
        assert await first == [("done", "running")]
        assert [await q for q in queued] == [[("done", "q0")], [("done", "q1")]]
        await b.stop()

    run(main())
    assert "refused" not in rec.seen


def test_queue_cost_limit_refuses_with_retry_after():
    rec = Recorder()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=1, max_delay_s=0.0, cost=lambda p: p,
                    max_queue_cost=10)
        rec.hold()
        first = asyncio.ensure_future(b.submit([1]))
        await rec.wait_entered()
        queued = asyncio.ensure_future(b.submit([6]))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull) as info:
            await b.submit([5])
        assert info.value.retry_after >= 1
        rec.gate.set()
        await first
        await queued
        await b.stop()

    run(main())
    assert 5 not in rec.seen


def test_max_batch_cost_limits_a_batch():
    rec = Recorder()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=8, max_delay_s=0.05, cost=lambda p: p[1],
                    max_batch_cost=10)
        await asyncio.gather(*(b.submit([(i, 4)]) for i in range(5)), b.submit([("big", 30)]))
        await b.stop()

    run(main())
    for batch in rec.batches:
        assert sum(p[1] for p in batch) <= 10 or len(batch) == 1
    assert [len(batch) for batch in rec.batches] == [2, 2, 1, 1]
    assert [("big", 30)] in rec.batches  # too big alone, still runs alone


# ---- deadlines and cancellation ----------------------------------------------------

def test_deadline_in_the_queue_raises_and_the_item_never_runs():
    rec = Recorder()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=1, max_delay_s=0.0)
        rec.hold()
        blocker = asyncio.ensure_future(b.submit(["blocker"]))
        await rec.wait_entered()
        with pytest.raises(DeadlineExceeded, match="timed out after 0.05 s"):
            await b.submit(["late"], timeout_s=0.05)
        rec.gate.set()
        await blocker
        assert await b.submit(["after"]) == [("done", "after")]
        await b.stop()

    run(main())
    assert "late" not in rec.seen
    assert rec.batches == [["blocker"], ["after"]]


class JumpingClock:
    """Stands in for the batcher's ``time`` module: a monotonic clock moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_expired_item_found_by_the_worker_is_dropped(monkeypatch):
    # An item whose deadline passed while it waited behind a running batch is failed by
    # the worker itself and never run, even though its caller's own timer has not fired
    # yet (the batcher's clock jumps past the deadline; the event loop's does not).
    clock = JumpingClock()
    monkeypatch.setattr(batching, "time", clock)
    rec = Recorder()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=4, max_delay_s=0.0)
        rec.hold()
        blocker = asyncio.ensure_future(b.submit(["blocker"]))
        await rec.wait_entered()
        late = asyncio.ensure_future(b.submit(["late"], timeout_s=30))
        await asyncio.sleep(0.02)
        clock.now += 31
        rec.gate.set()
        with pytest.raises(DeadlineExceeded, match=r"^request timed out in the queue$"):
            await late
        assert await blocker == [("done", "blocker")]
        await b.stop()

    run(main())
    assert rec.seen == ["blocker"]


def test_cancelled_caller_items_are_skipped():
    rec = Recorder()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=4, max_delay_s=0.0)
        rec.hold()
        blocker = asyncio.ensure_future(b.submit(["blocker"]))
        await rec.wait_entered()
        gone = asyncio.ensure_future(b.submit(["gone-1", "gone-2"]))
        stays = asyncio.ensure_future(b.submit(["stays"]))
        await asyncio.sleep(0.02)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        rec.gate.set()
        assert await stays == [("done", "stays")]
        await blocker
        await b.stop()

    run(main())
    assert "gone-1" not in rec.seen
    assert "gone-2" not in rec.seen
    assert rec.batches == [["blocker"], ["stays"]]
