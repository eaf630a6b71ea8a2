"""A repository of models: every model folder under ``--model_repository``, each under its name.

KServe's multi-model serving fills the repository at run time. Its model agent (KServe
v0.20.0, ``pkg/agent/puller.go``) downloads a TrainedModel into ``<repository>/<name>`` and
calls ``POST /v2/repository/models/<name>/load`` with ``{}``, taking any status but 200 for a
failed load; to remove one it deletes ``<repository>/<name>`` first and then calls
``.../unload``. So a load reads the folder, and an unload never needs it.

:class:`DetectorRepository` is the registry KServe's ``DataPlane`` looks models up in
(a ``kserve.model_repository.ModelRepository``), so V1, V2 REST and gRPC reach every loaded
model by name with no change to the routes. Its index has the shape of Triton's model
repository extension (``docs/protocol/extension_model_repository.md`` in
triton-inference-server/server: ``name``, ``version``, ``state``, ``reason``).

Each model has its own queue and batcher; their batches share one pool of
``--inference_workers`` slots (:attr:`~predictor.pipeline.batcher.Batcher.gate`), taken in
turn, so a busy model cannot starve the others.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from grpc import StatusCode
from kserve.model_repository import ModelRepository

from ..config import ServerConfig
from ..errors import BadRequest, NotFound, ServiceError, ShuttingDownError
from ..metrics import Metrics
from ..model import DetectionModel
from ..pipeline.compiled import MANIFEST
from ..pipeline.engines import WEIGHT_SUFFIXES, LoadError

log = logging.getLogger(__name__)
T = TypeVar("T")

# A TrainedModel's name is a DNS-1123 label; a leading letter or digit also keeps "..",
# ".hidden" and any path out.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")

READY, LOADING, UNAVAILABLE = "READY", "LOADING", "UNAVAILABLE"


class RepositoryFull(ServiceError):
    """``--max_models`` models are loaded: 507 Insufficient Storage / RESOURCE_EXHAUSTED."""

    status_code = StatusCode.RESOURCE_EXHAUSTED
    http_status = 507


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` looks like a model folder: a ``config.json``, a weights file or a
    compiled model's ``compiled.json`` in it."""
    if path.name.startswith(".") or not path.is_dir():
        return False  # Kubernetes' volume bookkeeping (..data), editors' and tools' folders
    return any(p.is_file() and (p.name in ("config.json", MANIFEST) or p.suffix in WEIGHT_SUFFIXES)
               for p in path.iterdir())


def check_name(name: str) -> None:
    """A model name must be a plain folder name."""
    if not _NAME.fullmatch(name):
        raise BadRequest(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-', "
                         f"starting with a letter or digit (a folder of the repository)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]


class RepositoryModel(DetectionModel):
    """A detector of the repository; it counts the requests inside it, for unload to wait on."""

    in_flight = 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """KServe's preprocess -> predict -> postprocess, counted."""
        self.in_flight += 1
        try:
            return await super().__call__(*args, **kwargs)
        finally:
            self.in_flight -= 1

    def load(self) -> bool:
        """As DetectionModel's; a model marked draining is not loaded again.

        KServe's ``DataPlane.get_model`` calls ``load()`` on a model that is not ready, on the
        event loop: after SIGTERM that would load and warm it up again.
        """
        if self.draining:
            return False
        return super().load()

    def release(self) -> None:
        """Lets its threads go; the weights go with the last reference to the model."""
        self.batcher.close()
        self.decoder.pool.shutdown(wait=False, cancel_futures=True)


class DetectorRepository(ModelRepository):  # type: ignore[misc]
    """The models of one folder, loaded and unloaded at run time, looked up by KServe by name."""

    def __init__(self, root: Path, config: ServerConfig, metrics: Metrics | None = None,
                 max_models: int | None = None) -> None:
        super().__init__(str(root))
        self.models: dict[str, RepositoryModel]
        self.root = root
        self.config = config
        self.metrics = metrics
        self.max_models = max_models
        self.drain_timeout = float(config.grace_period)
        self.gate = asyncio.Semaphore(config.batching.inference_workers or 1)
        self._locks: dict[str, asyncio.Lock] = {}
        self._loading: set[str] = set()
        self._failed: dict[str, str] = {}  # name -> why its last load failed
        # One load at a time, off the event loop: other models keep answering, and two
        # models' weights are never being read into memory at once.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._draining = False
        self._tasks: set[asyncio.Future[Any]] = set()  # loads and unloads under way

    # --- what predictor.server.shutdown sets on "the model" at SIGTERM, for every model

    @property
    def ready(self) -> bool:
        """False once the server is shutting down."""
        return not self._draining

    @ready.setter
    def ready(self, value: bool) -> None:
        for model in list(self.models.values()):
            model.ready = value

    @property
    def draining(self) -> bool:
        """True once the server is shutting down: no more loads."""
        return self._draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining = value
        for model in list(self.models.values()):
            model.draining = value

    # --- the folder

    def folders(self) -> list[str]:
        """Names of the model folders in the repository now."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if _NAME.fullmatch(p.name) and is_model_folder(p))

    def model_config(self, name: str) -> ServerConfig:
        """The server's flags, with the model's folder and name."""
        return replace(self.config, model_name=name, model=replace(
            self.config.model, model_dir=str(self.root / name), demo_if_empty=False))

    def _build(self, name: str) -> RepositoryModel:
        """Builds, loads and warms up one model (in the loader thread)."""
        metrics = self.metrics.for_model(name) if self.metrics is not None else None
        model = RepositoryModel(self.model_config(name), metrics)
        model.batcher.gate = self.gate
        try:
            model.load()
        except BaseException:
            model.release()
            if self.metrics is not None:
                self.metrics.model_unloaded(name, model.version, "")
            raise
        return model

    def _room_for(self, name: str) -> None:
        held = len(self.models) + len(self._loading)
        if self.max_models is not None and held >= self.max_models:
            raise RepositoryFull(
                f"cannot load model {name}: {held} models are loaded and the limit is "
                f"{self.max_models} (--max_models); unload one first or raise the limit")

    def load_all(self) -> None:
        """Loads every model folder at start; one that fails is logged and left out."""
        for name in self.folders():
            try:
                self._room_for(name)
                self.update(self._build(name))
            except RepositoryFull as exc:
                self._failed[name] = str(exc)
                log.error("%s", exc)
            except (LoadError, OSError, RuntimeError, ValueError) as exc:
                self._failed[name] = _first_line(exc)
                log.error("cannot load model %s: %s", name, self._failed[name])

    # --- load and unload at run time

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _finished(self, work: Callable[[], Awaitable[T]]) -> T:
        """Runs ``work`` to its end even when the caller goes away (the guard cancels a
        request whose client left): a load half done would leave its weights to the
        garbage collector, an unload half done a model out of the registry but not freed."""
        task = asyncio.ensure_future(work())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no warning
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def load_named(self, name: str) -> RepositoryModel:
        """Loads ``<repository>/<name>``; loading a loaded model again changes nothing.

        Raises NotFound (no such folder), BadRequest (the folder holds no loadable model,
        with the load error's line), RepositoryFull, ShuttingDownError.
        """
        check_name(name)
        return await self._finished(lambda: self._load(name))

    async def _load(self, name: str) -> RepositoryModel:
        async with self._lock(name):
            model = self.models.get(name)
            if model is not None and model.ready:
                return model
            if self._draining:
                raise ShuttingDownError("the server is shutting down and loads no model",
                                        retry_after=1)
            folder = self.root / name
            if not folder.is_dir():
                raise NotFound(f"no model folder {name!r} in the repository {self.root}")
            self._room_for(name)
            self._loading.add(name)
            log.info("loading model %s from %s", name, folder)
            try:
                model = await asyncio.get_running_loop().run_in_executor(
                    self._loader, self._build, name)
            except (LoadError, OSError, RuntimeError, ValueError) as exc:
                self._failed[name] = _first_line(exc)
                log.warning("cannot load model %s: %s", name, self._failed[name])
                raise BadRequest(f"cannot load model {name}: {self._failed[name]}") from exc
            finally:
                self._loading.discard(name)
            self._failed.pop(name, None)
            self.update(model)
            return model

    async def unload_named(self, name: str) -> None:
        """Stops serving ``name``: new requests get 404, queued ones are answered, then the
        model is freed. Its folder may be gone already (the agent deletes it first)."""
        check_name(name)
        await self._finished(lambda: self._unload(name))

    async def _unload(self, name: str) -> None:
        async with self._lock(name):
            failed = self._failed.pop(name, None)
            model = self.models.pop(name, None)
            if model is None:
                if failed is not None:
                    return  # its load failed: the agent removing it is told it is gone
                raise NotFound(f"model {name} is not loaded")
            log.info("unloading model %s: %d request(s) in flight", name, model.in_flight)
            # Out of the registry, no new request reaches the model; every request that
            # found it before is inside __call__ by now (no await in between), so waiting
            # for in_flight to drop, then for the batcher, loses none.
            deadline = time.monotonic() + self.drain_timeout
            while model.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await model.drain(max(0.0, deadline - time.monotonic()))
            model.ready = False
            model.release()
            if self.metrics is not None:
                self.metrics.model_unloaded(name, model.version, model.platform)
            device = model.runner.device
            del model
            gc.collect()  # torch modules hold reference cycles
            if device.type == "cuda":
                import torch

                torch.cuda.empty_cache()
            log.info("model %s unloaded", name)

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Every model of the repository, loaded or not, in Triton's index shape."""
        names = set(self.folders()) | set(self.models) | self._loading | set(self._failed)
        out = []
        for name in sorted(names):
            model = self.models.get(name)
            if model is not None and model.ready:
                entry = {"name": name, "version": model.version, "state": READY, "reason": ""}
            elif name in self._loading:
                entry = {"name": name, "version": "", "state": LOADING, "reason": ""}
            else:
                entry = {"name": name, "version": "", "state": UNAVAILABLE,
                         "reason": self._failed.get(name, "not loaded")}
            if entry["state"] == READY or not ready_only:
                out.append(entry)
        return out
