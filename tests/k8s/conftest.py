"""Fixtures for the manifest tests: rendered overlays and a strict CRD validator."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._support import (
    MANIFESTS,
    OVERLAYS,
    OVERLAYS_DIR,
    isvc_validator,
    load_isvc_schema,
    only_isvc,
    render_dir,
)

Render = Callable[[str | Path], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render() -> Render:
    """Renders a kustomization directory into its objects (fresh copies, cached render)."""
    def _do(directory: str | Path) -> list[dict[str, Any]]:
        return copy.deepcopy(list(render_dir(str(directory))))
    return _do


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    """Name of each directory under manifests/overlays."""
    return str(request.param)


@pytest.fixture
def isvc(overlay: str, render: Render) -> dict[str, Any]:
    """The InferenceService an overlay renders."""
    return only_isvc(render(OVERLAYS_DIR / overlay))


@pytest.fixture
def base_isvc(render: Render) -> dict[str, Any]:
    """The base InferenceService, rendered (a fresh copy each test may change)."""
    return only_isvc(render(MANIFESTS / "base"))


@pytest.fixture(scope="session")
def schema_errors() -> Callable[[dict[str, Any]], list[str]]:
    """Lists an object's CRD schema violations as ``path: message``; empty when valid."""
    validator = isvc_validator()

    def _errors(obj: dict[str, Any]) -> list[str]:
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        return ["/".join(str(p) for p in e.absolute_path) + ": " + e.message for e in errors]
    return _errors


@pytest.fixture(scope="session")
def crd_schema() -> dict[str, Any]:
    """The CRD's own v1beta1 openAPIV3Schema (not made strict), for reading enums."""
    return copy.deepcopy(load_isvc_schema())
