"""The target of the end-to-end suite: any running service, or a local one.

Settings (environment): ``E2E_BASE_URL`` (e.g. ``http://127.0.0.1:8080``; unset: the
suite starts ``python -m predictor`` on 127.0.0.1 itself), ``E2E_GRPC_TARGET``
(``host:port``; default: the base URL's host on 8081, or the local server's port),
``E2E_MODEL_NAME`` (default ``detector``), ``E2E_HOST_HEADER`` (an ingress's routing
host name), ``E2E_DEMO`` (default 1: the target serves the demo detector, so the
quality check runs; 0 for other weights). The same tests run against a local process,
the container and a kind cluster.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from tests.support.e2e import Target
from tests.support.servers import DEMO_MODEL_DIR, save_random_model, start_server


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The service under test (started here when E2E_BASE_URL is unset)."""
    name = os.environ.get("E2E_MODEL_NAME") or "detector"
    host = os.environ.get("E2E_HOST_HEADER") or None
    base = os.environ.get("E2E_BASE_URL")
    if base:
        grpc_target = os.environ.get("E2E_GRPC_TARGET") or os.environ.get("E2E_GRPC_URL")
        if not grpc_target:
            grpc_target = f"{urlparse(base).hostname}:8081"
        demo = os.environ.get("E2E_DEMO", "1").lower() in {"1", "true", "yes"}
        yield Target(base.rstrip("/"), grpc_target, name, host, demo)
        return
    model_dir = DEMO_MODEL_DIR
    demo = (model_dir / "config.json").is_file()
    if not demo:
        model_dir = save_random_model(tmp_path_factory.mktemp("e2e-model"))
    server = start_server(tmp_path_factory.mktemp("e2e-logs"), model_dir, model_name=name)
    try:
        yield Target(server.http_url, server.grpc_url, name, demo=demo)
    finally:
        server.stop()
