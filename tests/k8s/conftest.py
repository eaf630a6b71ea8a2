"""Fixtures for the manifest tests: rendered overlays and the API-model validator."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._support import ISVC_OVERLAYS, MANIFESTS, OVERLAYS_DIR, of_kind, only_isvc, render_dir

Render = Callable[[str | Path], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render() -> Render:
    """Renders a kustomization directory into its objects (fresh copies, cached render)."""
    def _do(directory: str | Path) -> list[dict[str, Any]]:
        return copy.deepcopy(list(render_dir(str(directory))))
    return _do


@pytest.fixture(params=ISVC_OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    """Name of each overlay that deploys an InferenceService."""
    return str(request.param)


@pytest.fixture
def isvc(overlay: str, render: Render) -> dict[str, Any]:
    """The InferenceService an overlay renders."""
    return only_isvc(render(OVERLAYS_DIR / overlay))


@pytest.fixture
def base_isvc(render: Render) -> dict[str, Any]:
    """The base InferenceService, rendered (a fresh copy each test may change)."""
    return only_isvc(render(MANIFESTS / "base"))


@pytest.fixture
def runtimes(overlay: str, render: Render) -> list[dict[str, Any]]:
    """The runtimes KServe could pick for an overlay: its own ones and the cluster one."""
    own = [o for o in render(OVERLAYS_DIR / overlay)
           if o["kind"] in {"ServingRuntime", "ClusterServingRuntime"}]
    return own + of_kind(render(MANIFESTS / "runtime"), "ClusterServingRuntime")


@pytest.fixture(scope="session")
def api_errors() -> Callable[[dict[str, Any]], list[str]]:
    """Lists an object's violations of the kserve/kubernetes API models; empty when valid."""
    pytest.importorskip("kserve.models", reason="the kserve package is not installed")
    pytest.importorskip("kubernetes.client", reason="the kubernetes package is not installed")
    from ._models import validate

    return validate
