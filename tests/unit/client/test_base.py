"""client._base: wait_ready's bookkeeping, shared by both clients, with a fake clock."""

from __future__ import annotations

import pytest

from client import Health, ModelNotFound, ModelNotReady, ServerUnreachable, Unauthorized
from client._base import ReadyWait


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ready_ends_the_wait_at_once() -> None:
    wait = ReadyWait("m", timeout=5, interval=1, clock=Clock())
    assert wait.saw(health=Health(live=True, ready=True))


def test_pauses_are_the_interval_then_what_is_left_then_an_error_of_the_last_kind() -> None:
    clock = Clock()
    wait = ReadyWait("m", timeout=2.5, interval=1, clock=clock)
    assert not wait.saw(error=ServerUnreachable("refused"))
    assert wait.pause() == 1
    clock.now += 2
    assert not wait.saw(error=ModelNotFound("no route", status=404))
    assert wait.pause() == pytest.approx(0.5)
    clock.now += 0.5
    with pytest.raises(ModelNotFound, match=r"not ready after 2.5s; last check: no route"):
        wait.pause()


def test_not_ready_answers_keep_waiting_and_end_as_model_not_ready() -> None:
    clock = Clock()
    wait = ReadyWait("m", timeout=1, interval=1, clock=clock)
    assert not wait.saw(health=Health(live=True, ready=False))
    clock.now += 1
    with pytest.raises(ModelNotReady, match="model 'm' is not ready"):
        wait.pause()


def test_errors_no_wait_can_cure_are_raised_at_once() -> None:
    wait = ReadyWait("m", timeout=60, interval=1, clock=Clock())
    with pytest.raises(Unauthorized):
        wait.saw(error=Unauthorized("bad token", status=401))
