"""Every kustomization renders, to the objects its documentation promises."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._support import (
    ISVC_OVERLAYS,
    MANIFESTS,
    OVERLAYS,
    OVERLAYS_DIR,
    RUNTIME_ONLY_OVERLAYS,
    kustomize_command,
)

pytestmark = pytest.mark.k8s

Render = Callable[[str | Path], list[dict[str, Any]]]

# Overlays that the README, the Makefile or scripts/kind-e2e.sh name: removing or
# renaming one breaks a documented command.
DOCUMENTED_OVERLAYS = {"kind", "kind-knative", "kind-runtime", "kind-grpc", "gpu", "grpc",
                       "knative",
                       "knative-scale-to-zero", "knative-canary", "standard-hpa", "keda",
                       "storage-uri", "model", "model-gpu", "runtime-namespaced",
                       "knative-model", "kind-keda"}


def test_documented_overlays_exist() -> None:
    missing = DOCUMENTED_OVERLAYS - set(OVERLAYS)
    assert not missing, f"overlays named in docs/scripts are missing: {sorted(missing)}"


def _kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o.get("kind", "?") for o in objects)


@pytest.mark.parametrize("name", ISVC_OVERLAYS)
def test_overlay_renders_one_inference_service(name: str, render: Render) -> None:
    objects = render(OVERLAYS_DIR / name)
    kinds = _kinds(objects)
    # Beside the InferenceService, an overlay may bring the runtime and the
    # ServiceAccount it needs in its namespace; nothing cluster-scoped (a namespace
    # owner could not apply it).
    assert kinds.count("InferenceService") == 1, f"{name} renders {kinds}"
    assert set(kinds) <= {"InferenceService", "ServingRuntime", "ServiceAccount"}, (
        f"{name} renders {kinds}")
    isvc = next(o for o in objects if o["kind"] == "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["name"] == "detector"
    predictor = isvc["spec"]["predictor"]
    if "containers" in predictor:
        assert [c["name"] for c in predictor["containers"]] == ["kserve-container"]
    else:
        assert predictor["model"]["modelFormat"]["name"] == "torchvision-detection"


@pytest.mark.parametrize("name", sorted(RUNTIME_ONLY_OVERLAYS))
def test_runtime_overlay_renders_a_namespaced_runtime(name: str, render: Render) -> None:
    assert _kinds(render(OVERLAYS_DIR / name)) == ["ServingRuntime"]


@pytest.mark.parametrize(("directory", "kinds"), [
    ("base", ["InferenceService"]),
    ("model", ["InferenceService"]),
    ("runtime", ["ClusterServingRuntime"]),
    ("app", ["Deployment", "Service"]),
    ("app-grpc", ["Deployment", "Service"]),
])
def test_bases_render_what_they_promise(directory: str, kinds: list[str],
                                        render: Render) -> None:
    assert _kinds(render(MANIFESTS / directory)) == kinds


@pytest.mark.parametrize("directory", ["overlays/gpu", "runtime", "app"])
def test_image_repository_is_overridable_with_kustomize_images(
        directory: str, tmp_path: Path, render: Render) -> None:
    # What a user does to deploy from their registry: an overlay with `images:`.
    if kustomize_command() is None:
        pytest.skip("neither kubectl nor kustomize is on PATH")
    relative = os.path.relpath(MANIFESTS / directory, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - {relative}\n"
        "images:\n"
        "  - name: kserve-detector\n"
        "    newName: registry.example.com/ml/kserve-detector\n"
        "    newTag: 0.1.0-cuda\n"
        "  - name: kserve-detector-web\n"
        "    newName: registry.example.com/ml/kserve-detector-web\n")
    images = []
    for obj in render(tmp_path):
        spec = obj["spec"]
        spec = spec.get("template", {}).get("spec", spec)
        spec = spec.get("predictor", spec)
        images += [c["image"] for c in spec.get("containers", [])]
    assert images
    assert all(i.startswith("registry.example.com/ml/") for i in images), images
    if directory != "app":
        assert images == ["registry.example.com/ml/kserve-detector:0.1.0-cuda"]
