"""batcher: batches form, wait at most the delay, fail alone, and never mix callers up."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from predictor.batcher import (
    Batcher,
    BatchStats,
    DeadlineExceeded,
    QueueFull,
    ShuttingDown,
)


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


def test_expired_item_found_by_the_worker_is_dropped():
    # The worker itself refuses an item whose deadline passed while it waited.
    rec = Recorder()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=4, max_delay_s=0.2)
        with pytest.raises(DeadlineExceeded):
            await b.submit(["slow-to-batch"], timeout_s=0.01)
        await asyncio.sleep(0.3)
        await b.stop()

    run(main())
    assert rec.attempts == []


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


# ---- failures ----------------------------------------------------------------------

def test_one_poison_item_fails_alone():
    rec = Recorder(fail=lambda batch: ValueError("poison!") if "poison" in batch else None)

    async def main() -> list[Any]:
        b = Batcher(rec, max_batch_size=8, max_delay_s=0.05)
        names = [f"ok{i}" for i in range(3)] + ["poison"] + [f"ok{i}" for i in range(3, 7)]
        outcomes = await asyncio.gather(*(b.submit([n]) for n in names),
                                        return_exceptions=True)
        await b.stop()
        return list(zip(names, outcomes, strict=True))

    for name, outcome in run(main()):
        if name == "poison":
            assert isinstance(outcome, ValueError)
            assert str(outcome) == "poison!"
        else:
            assert outcome == [("done", name)]
    assert ["poison"] not in rec.batches


def test_a_failing_item_fails_its_whole_request_but_not_others():
    rec = Recorder(fail=lambda batch: ValueError("bad") if "bad" in batch else None)

    async def main() -> tuple[Any, Any]:
        b = Batcher(rec, max_batch_size=8, max_delay_s=0.05)
        mixed, clean = await asyncio.gather(b.submit(["x", "bad", "y"]), b.submit(["z"]),
                                            return_exceptions=True)
        await b.stop()
        return mixed, clean

    mixed, clean = run(main())
    assert isinstance(mixed, ValueError)
    assert clean == [("done", "z")]


class FakeOOM(RuntimeError):
    pass


def test_batches_too_big_for_the_device_are_split_until_they_fit():
    rec = Recorder(fail=lambda batch: FakeOOM("out of memory") if len(batch) > 2 else None)
    stats: list[BatchStats] = []

    async def main() -> list[Any]:
        b = Batcher(rec, max_batch_size=8, max_delay_s=0.05, on_batch=stats.append)
        out = await asyncio.gather(*(b.submit([i]) for i in range(8)))
        await b.stop()
        return out

    assert run(main()) == [[("done", i)] for i in range(8)]
    assert all(len(batch) <= 2 for batch in rec.batches)
    assert len(rec.attempts[0]) == 8  # it did try the full batch first
    assert stats[0].size == 8
    assert stats[0].failed == 0


def test_wrong_result_count_is_an_error_not_a_mixup():
    async def main() -> Any:
        b = Batcher(lambda batch: ["only one"], max_batch_size=4, max_delay_s=0.05)
        out = await asyncio.gather(b.submit(["a"]), b.submit(["b"]), return_exceptions=True)
        await b.stop()
        return out

    a, b = run(main())
    # Split down to single items, each gets its own (single) result.
    assert a == ["only one"]
    assert b == ["only one"]


def test_results_never_cross_between_callers():
    def slow_double(p: tuple[int, int]) -> tuple[int, int, int]:
        return (p[0], p[1], p[1] * 2)

    rec = Recorder(fn=slow_double)
    rng = random.Random(7)
    requests = [[(caller, caller * 100 + j) for j in range(rng.randint(1, 3))]
                for caller in range(60)]

    async def one(b: Batcher[Any, Any], payloads: list[Any]) -> list[Any]:
        await asyncio.sleep(rng.random() * 0.02)
        return await b.submit(payloads)

    async def main() -> list[list[Any]]:
        b = Batcher(rec, max_batch_size=5, max_delay_s=0.002)
        out = await asyncio.gather(*(one(b, r) for r in requests))
        await b.stop()
        return out

    results = run(main())
    for payloads, result in zip(requests, results, strict=True):
        assert result == [slow_double(p) for p in payloads]
    assert max(len(batch) for batch in rec.batches) > 1  # batching really happened


# ---- shutdown ----------------------------------------------------------------------

def test_stop_drains_queued_work_then_refuses_new_work():
    rec = Recorder()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=2, max_delay_s=0.0)
        rec.hold()
        pending = [asyncio.ensure_future(b.submit([i])) for i in range(5)]
        await rec.wait_entered()
        stopping = asyncio.ensure_future(b.stop(timeout_s=10))
        await asyncio.sleep(0.05)
        with pytest.raises(ShuttingDown):
            await b.submit(["new"])
        rec.gate.set()
        await stopping
        assert [await p for p in pending] == [[("done", i)] for i in range(5)]
        with pytest.raises(ShuttingDown):
            await b.submit(["after"])

    run(main())
    assert "new" not in rec.seen
    assert "after" not in rec.seen


def test_stop_timeout_answers_callers_of_the_running_batch():
    rec = Recorder()

    async def main() -> None:
        b = Batcher(rec, max_batch_size=1, max_delay_s=0.0)
        rec.hold()
        running = asyncio.ensure_future(b.submit(["stuck"]))
        queued = asyncio.ensure_future(b.submit(["queued"]))
        await rec.wait_entered()
        await b.stop(timeout_s=0.05)
        try:
            for fut in (running, queued):
                with pytest.raises(ShuttingDown):
                    await asyncio.wait_for(fut, 2)
        finally:
            rec.gate.set()

    run(main())
    assert "queued" not in rec.seen


def test_constructor_refuses_nonsense():
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(lambda b: b, max_batch_size=0)
    with pytest.raises(ValueError, match="max_delay_s"):
        Batcher(lambda b: b, max_delay_s=-1)


def test_several_workers_run_batches_at_the_same_time() -> None:
    import threading

    barrier = threading.Barrier(2, timeout=5)

    def run_batch(items: list[str]) -> list[str]:
        barrier.wait()  # raises BrokenBarrierError unless two batches are inside at once
        return [f"done {x}" for x in items]

    async def main() -> None:
        b = Batcher(run_batch, max_batch_size=1, max_delay_s=0.0, workers=2)
        results = await asyncio.gather(b.submit(["a"]), b.submit(["b"]))
        assert results == [["done a"], ["done b"]]
        assert b.busy == 0
        await b.stop()

    asyncio.run(main())


def test_grouping_batches_items_of_the_oldest_items_group_first() -> None:
    batches: list[list[str]] = []

    def run_batch(items: list[str]) -> list[str]:
        batches.append(list(items))
        return items

    async def main() -> None:
        # Group = first letter; hold the worker until everything is queued.
        b = Batcher(run_batch, max_batch_size=2, max_delay_s=0.0, group_key=lambda s: s[0])
        tasks = [asyncio.ensure_future(b.submit([x])) for x in ["w1", "t1", "w2", "t2", "w3"]]
        await asyncio.sleep(0)  # all five are queued before the worker's first look
        assert [r[0] for r in await asyncio.gather(*tasks)] == ["w1", "t1", "w2", "t2", "w3"]
        await b.stop()

    asyncio.run(main())
    # The oldest item always leads; its group-mates join it ahead of older others.
    assert batches[0] == ["w1", "w2"]
    assert batches[1] == ["t1", "t2"]
    assert batches[2] == ["w3"]
