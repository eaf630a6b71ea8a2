"""The V2 model-repository routes over REST, ahead of KServe's own.

``POST /v2/repository/models/{name}/load`` and ``/unload`` answer as KServe's
(``python/kserve/kserve/protocol/rest/v2_endpoints.py``: ``{"name", "load"|"unload"}``),
which is what KServe's model agent calls; unlike KServe's they say why a load failed (404
for no folder, 400 with the load error's line, 507 past ``--max_models``) instead of a 503
for everything. ``POST /v2/repository/index`` is the call Triton's clients make to list a
repository (the V2 model repository extension); KServe has no such route.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request, Response

from ..errors import BadRequest
from .repository import DetectorRepository


def _json(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _ready_only(body: bytes) -> bool:
    """The index request's ``ready`` field (Triton's body; empty or ``{}`` is all models)."""
    if not body.strip():
        return False
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the index request's body is not JSON ({exc})") from exc
    if not isinstance(parsed, dict):
        raise BadRequest("the index request's body must be a JSON object, e.g. {\"ready\": true}")
    return bool(parsed.get("ready", False))


class RepositoryRoutes:
    """Load, unload and index of one :class:`~predictor.server.repository.DetectorRepository`."""

    def __init__(self, repository: DetectorRepository) -> None:
        self.repository = repository

    async def load(self, model_name: str) -> Response:
        """``POST /v2/repository/models/{name}/load`` (any body: the agent sends ``{}``)."""
        await self.repository.load_named(model_name)
        return _json({"name": model_name, "load": True})

    async def unload(self, model_name: str) -> Response:
        """``POST /v2/repository/models/{name}/unload``."""
        await self.repository.unload_named(model_name)
        return _json({"name": model_name, "unload": True})

    async def index(self, request: Request) -> Response:
        """``POST /v2/repository/index``: ``[{name, version, state, reason}]``."""
        return _json(self.repository.index(_ready_only(await request.body())))

    async def ready(self) -> Response:
        """``GET /v2/health/ready``: ready until SIGTERM (KServe's is always ready); a
        repository with no model loaded is ready too, since the agent fills it after."""
        ready = self.repository.ready
        return Response(orjson.dumps({"ready": ready}), status_code=200 if ready else 503,
                        media_type="application/json")

    def register(self, app: FastAPI) -> None:
        """Adds the routes; call before KServe adds its own, so that these match first."""
        app.add_api_route("/v2/health/ready", self.ready, methods=["GET"])
        app.add_api_route("/v2/repository/models/{model_name}/load", self.load,
                          methods=["POST"])
        app.add_api_route("/v2/repository/models/{model_name}/unload", self.unload,
                          methods=["POST"])
        app.add_api_route("/v2/repository/index", self.index, methods=["POST"])
