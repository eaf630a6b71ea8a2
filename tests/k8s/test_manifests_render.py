"""Every kustomize overlay renders, to one InferenceService for the detector."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._support import MANIFESTS, OVERLAYS, OVERLAYS_DIR, kustomize_command

pytestmark = pytest.mark.k8s

Render = Callable[[str | Path], list[dict[str, Any]]]

# Overlays that the README, the Makefile or scripts/kind-e2e.sh name: removing or
# renaming one breaks a documented command.
DOCUMENTED_OVERLAYS = {"kind", "kind-knative", "gpu", "grpc", "knative",
                       "knative-scale-to-zero", "standard-hpa", "keda", "storage-uri"}


def test_documented_overlays_exist() -> None:
    missing = DOCUMENTED_OVERLAYS - set(OVERLAYS)
    assert not missing, f"overlays named in docs/scripts are missing: {sorted(missing)}"


@pytest.mark.parametrize("directory", [MANIFESTS / "base"] + [OVERLAYS_DIR / o for o in OVERLAYS],
                         ids=["base", *OVERLAYS])
def test_renders_one_inference_service(directory: Path, render: Render) -> None:
    objects = render(directory)
    kinds = sorted(o.get("kind", "?") for o in objects)
    assert kinds == ["InferenceService"], f"{directory.name} renders {kinds}"
    isvc = objects[0]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["name"] == "detector"
    containers = isvc["spec"]["predictor"]["containers"]
    assert [c["name"] for c in containers] == ["kserve-container"]


def test_image_repository_is_overridable_with_kustomize_images(tmp_path: Path,
                                                                render: Render) -> None:
    # What a user does to deploy from their registry: an overlay with `images:`.
    relative = os.path.relpath(OVERLAYS_DIR / "gpu", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - {relative}\n"
        "images:\n"
        "  - name: kserve-detector\n"
        "    newName: registry.example.com/ml/kserve-detector\n"
        "    newTag: 0.1.0-cuda\n")
    if kustomize_command() is None:
        pytest.skip("neither kubectl nor kustomize is on PATH")
    (isvc,) = render(tmp_path)
    image = isvc["spec"]["predictor"]["containers"][0]["image"]
    assert image == "registry.example.com/ml/kserve-detector:0.1.0-cuda"
