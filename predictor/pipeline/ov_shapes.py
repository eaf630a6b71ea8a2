"""Which compiled graph runs each input shape, with compiling kept off the request path.

Detectors that keep the picture's aspect ratio (R-CNN, RetinaNet, FCOS) see one input
shape per aspect ratio. They are exported once with dynamic height and width; the
dynamic graph is compiled and checked against eager at load, so a picture of a shape
never seen before runs on it at once (measured on RetinaNet v2: compiling a static graph
and checking it against eager on the request path made the first picture of each new
shape 6-12x slower than a warm one).

Meanwhile one background thread settles the new shape: it compares the dynamic graph to
eager on that shape and, while fewer than ``max_static`` static graphs exist, compiles
and checks a static graph for it (the CPU plugin runs static shapes 10-20 % faster).
Static graphs are bounded because each holds its own weights and activation buffers. A
shape whose check fails runs eager from then on, with a log line saying why.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from .ov_graph import Compiled, Runtime, Shape, max_error

log = logging.getLogger(__name__)


def release_memory() -> None:
    """Hands the heap's free pages back to the system (glibc ``malloc_trim``).

    An eager check at R-CNN sizes allocates about a gigabyte of activations; torch frees
    them, but glibc keeps the pages, and the process's RSS would carry them for good.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)

# Static graphs compiled per input shape (the load's own shape counts); later shapes run on
# the dynamic graph. Two cover the common camera shapes (4:3 and 16:9) in each orientation
# only partly; each one costs a compile (seconds) and its own buffers (hundreds of MB at
# R-CNN sizes), so the bound favours memory.
MAX_SHAPES = 2


class Shapes:
    """Maps an input shape to a compiled graph (static, else dynamic) or None (eager).

    Args:
        runtime: compiles graphs in the engine's precision.
        model: the exported ``ov.Model`` with dynamic height and width, or None when the
            model resizes every picture to one size (then other shapes run eager).
        dynamic: ``model`` compiled as it is (checked at load), or None.
        eager: the exported module run by torch, the reference for every check.
        tolerance: largest relative difference from eager a graph may show.
        name: names the graph in log lines.
        max_static: static graphs at most.
    """

    def __init__(self, runtime: Runtime, model: Any, dynamic: Compiled | None,
                 eager: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
                 tolerance: float, name: str, max_static: int = MAX_SHAPES) -> None:
        self.runtime = runtime
        self.model = model
        self.dynamic = dynamic
        self.eager = eager
        self.tolerance = tolerance
        self.name = name
        self.max_static = max_static
        self.static: dict[Shape, Compiled] = {}
        self.refused: set[Shape] = set()
        self.on_dynamic: set[Shape] = set()  # checked, run on the dynamic graph
        self._pending: dict[Shape, Future[None]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def add(self, shape: Shape, graph: Compiled) -> None:
        """A shape already compiled and checked (at load)."""
        self.static[shape] = graph

    def __call__(self, shape: Shape) -> Compiled | None:
        graph = self.static.get(shape)
        if graph is not None:
            return graph
        if shape in self.refused or self.dynamic is None or self.model is None:
            return None
        if shape not in self.on_dynamic:
            self.settle([shape])
        return self.dynamic

    def settle(self, shapes: Iterable[Shape]) -> None:
        """Checks (and compiles where slots remain) these shapes in the background."""
        if self.dynamic is None or self.model is None:
            return
        with self._lock:
            for shape in shapes:
                if (shape in self.static or shape in self.refused or shape in self.on_dynamic
                        or shape in self._pending):
                    continue
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="ov-shapes")
                self._pending[shape] = self._pool.submit(self._settle, shape)

    def wait(self, timeout: float | None = None) -> None:
        """Blocks until every shape handed over so far is settled (tests, warm-up)."""
        with self._lock:
            pending = list(self._pending.values())
        for future in pending:
            future.result(timeout)

    def _settle(self, shape: Shape) -> None:
        try:
            self._check(shape)
        finally:
            release_memory()
            with self._lock:
                self._pending.pop(shape, None)

    def _check(self, shape: Shape) -> None:
        example = torch.rand(shape)
        why = ""
        try:
            want = self.eager(example)
            assert self.dynamic is not None
            error = max_error(want, tuple(self.dynamic(example)))
            if error > self.tolerance:
                why = f"the dynamic graph differs from eager by {error:.2g} (relative)"
            elif len(self.static) < self.max_static:
                graph = self.runtime.compile(self.model, shape)
                error = max_error(want, tuple(graph(example)))
                if error <= self.tolerance:
                    self.static[shape] = graph
                    return
                log.warning("%s: the static graph for %s differs from eager by %.2g; the "
                            "dynamic graph runs it", self.name, shape, error)
        except Exception as exc:  # noqa: BLE001 - any failure means: run this shape eager
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
        if why:
            log.warning("%s: input shape %s runs eager: %s", self.name, shape, why)
            self.refused.add(shape)
        else:
            self.on_dynamic.add(shape)
