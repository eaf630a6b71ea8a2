"""The inference service's state as the web backend last saw it.

A background task probes the model's readiness every ``health_interval`` seconds, each
probe bounded by ``probe_timeout``; every detect call also reports what it saw. The
app's own liveness (``/healthz``) reads this state and never waits on the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from client import (
    ClientError,
    Health,
    ModelNotFound,
    ModelNotReady,
    ServerUnreachable,
    Unauthorized,
)

__all__ = ["STATES", "ServiceMonitor", "ServiceState"]

State = Literal["unknown", "ready", "not_ready", "unreachable", "error"]
#: Every state, in the order a dashboard would list them.
STATES: tuple[State, ...] = ("unknown", "ready", "not_ready", "unreachable", "error")

log = logging.getLogger("client.web")


@dataclass(frozen=True)
class ServiceState:
    """One observation of the inference service.

    Attributes:
        state: ``ready``, ``not_ready`` (live, model loading), ``unreachable`` (no answer),
            ``error`` (it answers, but refuses this backend: unknown model, credentials),
            or ``unknown`` before the first probe.
        detail: One sentence for a person.
        checked_at: ``time.time()`` of the observation.
    """

    state: State
    detail: str
    checked_at: float

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        """As ``/healthz`` shows it, with the observation's age in seconds."""
        age = max(0.0, (time.time() if now is None else now) - self.checked_at)
        return {"state": self.state, "detail": self.detail, "checked_s_ago": round(age, 1)}


def state_for_error(exc: ClientError, model: str) -> ServiceState:
    """What a failed probe or call says about the service."""
    now = time.time()
    if isinstance(exc, ModelNotReady):
        return ServiceState("not_ready", f"model {model!r} is loading or restarting", now)
    if isinstance(exc, ServerUnreachable):
        return ServiceState("unreachable", "the inference service does not answer", now)
    if isinstance(exc, ModelNotFound):
        return ServiceState("error", f"the inference service has no model {model!r}", now)
    if isinstance(exc, Unauthorized):
        return ServiceState("error", "the inference service refuses this backend's "
                                     "credentials", now)
    return ServiceState("error", "the inference service answers with errors", now)


class ServiceMonitor:
    """Keeps :attr:`state` fresh by probing in the background.

    Args:
        probe: One readiness check (``AsyncDetectionClient.health``).
        model: The model name, for messages.
        interval: Seconds between probes.
        timeout: Seconds one probe may take.
        on_change: Called with each new state (metrics).
    """

    def __init__(self, probe: Callable[[], Awaitable[Health]], *, model: str,
                 interval: float, timeout: float,
                 on_change: Callable[[ServiceState], None] | None = None) -> None:
        self._probe = probe
        self._model = model
        self._interval = interval
        self._timeout = timeout
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self.state = ServiceState("unknown", "not checked yet", time.time())

    def report(self, state: ServiceState) -> None:
        """Records an observation (a probe's, or a detect call's)."""
        if state.state != self.state.state:
            log.info("inference service: %s (%s)", state.state, state.detail)
        self.state = state
        if self._on_change is not None:
            self._on_change(state)

    def report_success(self) -> None:
        """A detect call just succeeded: the service is ready."""
        self.report(ServiceState("ready", f"model {self._model!r} is ready", time.time()))

    def report_error(self, exc: ClientError) -> None:
        """A detect call failed; only failures that say something about the service count."""
        if isinstance(exc, (ModelNotReady, ServerUnreachable, ModelNotFound, Unauthorized)):
            self.report(state_for_error(exc, self._model))

    async def check(self) -> ServiceState:
        """Probes once and records the result."""
        try:
            health = await asyncio.wait_for(self._probe(), self._timeout)
        except TimeoutError:
            state = ServiceState("unreachable", f"the inference service did not answer a "
                                                f"readiness probe within {self._timeout:g} s",
                                 time.time())
        except ClientError as exc:
            state = state_for_error(exc, self._model)
        else:
            if health.ready:
                state = ServiceState("ready", f"model {self._model!r} is ready", time.time())
            else:
                state = state_for_error(ModelNotReady("not ready"), self._model)
        self.report(state)
        return state

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # a probe must never end the loop
                log.exception("inference service probe failed unexpectedly")
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        """Starts probing in the background (call from inside the event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stops the background probes."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
