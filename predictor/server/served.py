"""What both transports share: the request-id header, which model may take a request, and
the one log line a refusal leaves.

Neutral ground between :mod:`predictor.server.rest_routes` and
:mod:`predictor.server.grpc_servicer`, so that neither imports the other.
"""

from __future__ import annotations

import logging
from typing import Protocol

from kserve.errors import ModelNotReady
from kserve.protocol.dataplane import DataPlane

from ..config import Limits
from ..errors import VersionNotFound

log = logging.getLogger(__name__)

REQUEST_ID = "x-request-id"
MODEL_VERSION = "x-model-version"


class ServedModel(Protocol):
    """What the routes need of a model beyond KServe's interface."""

    name: str
    version: str
    limits: Limits
    ready: bool
    draining: bool


def served_model(dataplane: DataPlane, name: str, version: str = "") -> ServedModel:
    """The model a request names, if it may take the request.

    Not ready refuses it (503), except while draining after SIGTERM: a request that was
    received before the signal is served (the listener is closed by then, so no new
    connection arrives; gRPC refuses new calls itself).
    """
    model: ServedModel = dataplane.get_model_from_registry(name)  # ModelNotFound: 404
    if not (model.ready or getattr(model, "draining", False)):
        raise ModelNotReady(name)
    check_version(model, version)
    return model


def check_version(model: ServedModel, version: str) -> None:
    """A request naming a version gets 404 unless it is the one served."""
    if version and version != model.version:
        raise VersionNotFound(f"model {model.name} has no version {version!r}; it serves "
                              f"version {model.version!r}")


def log_refusal(request_id: str, route: str, status: int | str, reason: str) -> None:
    """The one line a client's mistake leaves in the log."""
    log.info("request %s %s -> %s: %s", request_id, route, status, reason[:300])
