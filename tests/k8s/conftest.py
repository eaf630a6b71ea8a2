"""Fixtures for the manifest tests: rendered overlays and the API-model validator."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._fakes import SUCCEEDING_TOOLS, run_script, state_file
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


@pytest.fixture(scope="session")
def _installed_states(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """The fake cluster after `scripts/kind-e2e.sh up`, per flavour (each run once)."""
    cache: dict[str, str] = {}
    settings = {"standard": {}, "knative": {"KNATIVE": "1"}, "keda": {"KEDA": "1"}}

    def state(flavour: str) -> str:
        if flavour not in cache:
            folder = tmp_path_factory.mktemp(f"cluster-{flavour}")
            proc = run_script(folder, "up", tools=SUCCEEDING_TOOLS,
                              FAKE_CLUSTERS="kserve-detector", **settings[flavour])
            assert proc.returncode == 0, proc.stderr
            cache[flavour] = state_file(folder).read_text(encoding="utf-8")
        return cache[flavour]
    return state


@pytest.fixture
def installed(tmp_path: Path, _installed_states: Callable[[str], str]) -> Callable[[str], None]:
    """Puts the test's fake cluster where `up` (standard, knative or keda) leaves it."""
    def install(flavour: str = "standard") -> None:
        state_file(tmp_path).write_text(_installed_states(flavour))
    return install

