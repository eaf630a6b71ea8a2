"""Every change this server makes to KServe's and uvicorn's behaviour, installed in one place.

Written against kserve 0.21.0 and the versions of uvicorn, httptools, fastapi, starlette,
orjson and grpc-interceptor in :data:`WRITTEN_FOR` (the ones ``constraints.txt`` pins, since
kserve's own ranges are loose); :func:`install` logs a warning naming each package whose
installed version differs, and a test fails when a pin moves, so that each item below is
checked again on an upgrade:

1. REST inference and metadata routes of our own, ahead of KServe's
   (predictor.server.rest_routes): KServe's pydantic request model refuses list
   parameters, its binary decoder breaks BYTES, an answer with an empty output tensor
   fails its response model (HTTP 500), ``application/json; charset=utf-8`` is not taken
   for JSON, and metadata has no version.
2. The gRPC servicer replaced by a subclass (predictor.server.grpc_servicer): KServe
   ignores the requested outputs, lacks ``double_param``, has no version in metadata, and
   its interceptor logs every client error with a traceback.
3. The guard middleware (predictor.server.rest_middleware), ``{"error": ...}`` for every error (404
   and 405 too), and KServe's handlers for bad input and unknown or unready models
   replaced by ones that do not log a traceback for a client's mistake.
4. KServe's gRPC server reads its message limit from the module-level ``args``.
5. uvicorn's SIGTERM handler also drains gRPC and turns the model not ready
   (predictor.server.shutdown).
6. uvicorn's httptools parser keeps every header line it reads; past
   ``--max_header_bytes`` it keeps none (:func:`cap_request_head`), so a huge head costs no
   memory and the guard answers it with 431.
7. With a model repository (predictor.server.repository): the repository's load, unload and
   index routes ahead of KServe's (predictor.server.repository_routes), its gRPC servicer
   (predictor.server.grpc_repository), and Triton's ``RepositoryIndex`` added beside the
   handlers KServe's generated ``add_GRPCInferenceServiceServicer_to_server`` registers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from ..config import Limits

log = logging.getLogger(__name__)

WRITTEN_FOR = {
    "kserve": "0.21.0",  # its ModelServer, REST server, gRPC servicer and handlers
    "uvicorn": "0.55.0",  # Server.handle_exit, the httptools protocol's callbacks
    "httptools": "0.9.0",  # the parser whose callbacks cap_request_head wraps
    "fastapi": "0.165.0",  # KServe's app, where the routes and handlers go
    "starlette": "1.10.0",  # the middleware and HTTPException the guard and routes use
    "orjson": "3.13.0",  # KServe's JSON, which the REST routes write alike
    "grpc-interceptor": "0.15.4",  # GrpcException, how KServe's interceptor maps errors
}
"""Each package these replacements reach into, and the version they were written for."""


def versions_ok() -> bool:
    """Whether every patched package is installed at the version in :data:`WRITTEN_FOR`."""
    ok = True
    for package, expected in WRITTEN_FOR.items():
        installed = version(package)
        if installed != expected:
            log.warning("%s %s is installed; predictor.server.compat was written for %s: check "
                        "each replacement it lists still applies", package, installed, expected)
            ok = False
    if ok:
        log.info("kserve %s, uvicorn %s: installing this server's REST routes, gRPC servicer "
                 "and shutdown hook", WRITTEN_FOR["kserve"], WRITTEN_FOR["uvicorn"])
    return ok


def install(server: Any, model: Any, *, max_body_bytes: int, grace_period: float,
            on_reject: Callable[[str], None] | None = None,
            on_disconnect: Callable[[], None] | None = None,
            max_header_bytes: int = Limits.max_header_bytes, repository: Any = None) -> None:
    """Installs every replacement; call after building the ModelServer, before ``start``.

    ``repository`` (a :class:`predictor.server.repository.DetectorRepository`) adds its
    routes and gRPC calls; ``model`` is then the repository too (the shutdown hook marks
    its models).
    """
    import uvicorn
    from kserve import model_server as ks
    from kserve.protocol.grpc import server as grpc_server

    from . import rest_routes
    from .grpc_servicer import DetectorServicer
    from .shutdown import GracefulShutdown

    versions_ok()
    if repository is not None:
        from .repository_routes import RepositoryRoutes

        RepositoryRoutes(repository).register(ks.app)
        _add_index_handler()
    rest_routes.install(ks.app, server.dataplane, max_body_bytes, on_reject=on_reject,
                        on_disconnect=on_disconnect, max_header_bytes=max_header_bytes)
    cap_request_head(max_header_bytes)
    # KServe registers its exception handlers when the REST server starts, over ours.
    from kserve.protocol.rest import server as rest_server

    kserve_handlers = getattr(rest_server.RESTServer, "_detector_kserve_handlers",
                              rest_server.RESTServer._add_exception_handlers)

    def add_exception_handlers(rest: Any, app: Any) -> None:
        kserve_handlers(rest, app)
        rest_routes.install_error_handlers(app)

    rest_server.RESTServer._detector_kserve_handlers = kserve_handlers
    rest_server.RESTServer._add_exception_handlers = add_exception_handlers

    def servicer(data_plane: Any, extension: Any) -> DetectorServicer:
        if repository is not None:
            from .grpc_repository import RepositoryServicer

            return RepositoryServicer(data_plane, extension, repository, on_reject=on_reject)
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


def _add_index_handler() -> None:
    """KServe's generated registration, plus Triton's ``RepositoryIndex`` when the servicer
    has it (KServe's proto has no such call)."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as generated

    from .grpc_repository import index_handler

    add = getattr(generated, "_detector_add", generated.add_GRPCInferenceServiceServicer_to_server)

    def add_servicer(servicer: Any, grpc_server: Any) -> None:
        add(servicer, grpc_server)
        extra = index_handler(servicer)
        if extra is not None:
            grpc_server.add_generic_rpc_handlers((extra,))

    generated._detector_add = add
    generated.add_GRPCInferenceServiceServicer_to_server = add_servicer


def cap_request_head(limit: int) -> None:
    """Stops uvicorn's httptools parser from keeping a request head past ``limit`` bytes.

    uvicorn (``protocols/http/httptools_impl.py``) appends every header line and URL
    chunk it parses, with no bound. Past ``limit`` the request keeps none of the rest and
    carries the :data:`~predictor.server.rest_middleware.HEAD_CUT` marker instead, which the guard
    answers with 431. (uvicorn's h11 parser has its own, smaller bound.)
    """
    from uvicorn.protocols.http import httptools_impl

    from .rest_middleware import HEAD_CUT

    proto: Any = httptools_impl.HttpToolsProtocol
    if getattr(proto, "_detector_head_cap", None) == limit:
        return
    begin = getattr(proto, "_detector_begin", proto.on_message_begin)
    on_url = getattr(proto, "_detector_on_url", proto.on_url)
    on_header = getattr(proto, "_detector_on_header", proto.on_header)

    def over(self: Any, size: int) -> bool:
        self._detector_head = getattr(self, "_detector_head", 0) + size
        if self._detector_head <= limit:
            return False
        if not self.headers or self.headers[-1][0] != HEAD_CUT:
            self.headers.append((HEAD_CUT, b"1"))
        return True

    def capped_begin(self: Any) -> None:
        self._detector_head = 0
        begin(self)

    def capped_url(self: Any, url: bytes) -> None:
        room = limit - getattr(self, "_detector_head", 0)
        if over(self, len(url)) and room > 0:
            on_url(self, url[:room])  # a truncated URL still parses; the guard refuses it
        elif room > 0:
            on_url(self, url)

    def capped_header(self: Any, name: bytes, value: bytes) -> None:
        if not over(self, len(name) + len(value) + 4):
            on_header(self, name, value)

    proto._detector_begin, proto._detector_on_url, proto._detector_on_header = (
        begin, on_url, on_header)
    proto.on_message_begin, proto.on_url, proto.on_header = (
        capped_begin, capped_url, capped_header)
    proto._detector_head_cap = limit
