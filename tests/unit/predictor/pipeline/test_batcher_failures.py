"""batcher: a failing item fails alone, callers never get each other's results, shutdown drains."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import pytest

from predictor.pipeline.batcher import Batcher, BatchStats, ShuttingDown
from tests.support.batching import Recorder, run

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
