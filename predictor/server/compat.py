"""Every change this server makes to KServe's and uvicorn's behaviour, installed in one place.

Written against kserve 0.21.0 (the version ``pyproject.toml`` pins); :func:`install`
logs a warning when another version is installed, and a test fails when the pin moves,
so that each item below is checked again on an upgrade:

1. REST inference and metadata routes of our own, ahead of KServe's (predictor.server.rest_routes):
   KServe's pydantic request model refuses list parameters, its binary decoder breaks
   BYTES, an answer with an empty output tensor fails its response model (HTTP 500),
   ``application/json; charset=utf-8`` is not taken for JSON, and metadata has no version.
2. The gRPC servicer replaced by a subclass (predictor.server.grpc_servicer): KServe ignores the
   requested outputs, lacks ``double_param``, and has no version in metadata.
3. The body guard middleware and ``{"error": ...}`` for every error (404 and 405 too).
4. KServe's gRPC server reads its message limit from the module-level ``args``.
5. uvicorn's SIGTERM handler also drains gRPC and turns the model not ready
   (predictor.server.shutdown).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

log = logging.getLogger(__name__)

WRITTEN_FOR = "0.21.0"


def kserve_version_ok() -> bool:
    """Whether the installed kserve is the one these replacements were written for."""
    installed = version("kserve")
    if installed != WRITTEN_FOR:
        log.warning("kserve %s is installed; predictor.server.compat was written for %s: check "
                    "each replacement it lists still applies", installed, WRITTEN_FOR)
        return False
    log.info("kserve %s: installing this server's REST routes, gRPC servicer and shutdown hook",
             installed)
    return True


def install(server: Any, model: Any, *, max_body_bytes: int, grace_period: float,
            on_reject: Callable[[str], None] | None = None,
            on_disconnect: Callable[[], None] | None = None) -> None:
    """Installs every replacement; call after building the ModelServer, before ``start``."""
    import uvicorn
    from kserve import model_server as ks
    from kserve.protocol.grpc import server as grpc_server

    from . import rest_routes
    from .grpc_servicer import DetectorServicer
    from .shutdown import GracefulShutdown

    kserve_version_ok()
    rest_routes.install(ks.app, server.dataplane, max_body_bytes, on_reject=on_reject,
                     on_disconnect=on_disconnect)

    def servicer(data_plane: Any, extension: Any) -> DetectorServicer:
        return DetectorServicer(data_plane, extension, on_reject=on_reject)

    grpc_server.InferenceServicer = servicer
    ks.args.grpc_max_receive_message_length = max_body_bytes

    async def stop_grpc(grace: float) -> None:
        # KServe keeps its grpc.aio server private; its own stop() only runs after REST.
        inner = getattr(getattr(server, "_grpc_server", None), "_server", None)
        if inner is not None:
            await inner.stop(grace=grace)

    hook = GracefulShutdown(model, grace_period, stop_grpc)
    original = uvicorn.Server.handle_exit

    def handle_exit(uv_server: uvicorn.Server, sig: int, frame: Any) -> None:
        original(uv_server, sig, frame)
        hook.begin()

    uvicorn.Server.handle_exit = handle_exit  # type: ignore[method-assign,assignment]
