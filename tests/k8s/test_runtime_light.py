"""The light runtime: a storageUri holding a compiled folder selects the torch-free image.

KServe picks a runtime by the InferenceService's model format (v0.20.0,
pkg/apis/serving/v1beta1/predictor_model.go; followed by ``_kserve.select_runtime``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._kserve import predictor_container, select_runtime
from ._support import MANIFESTS, of_kind

pytestmark = pytest.mark.k8s

Render = Callable[[str | Path], list[dict[str, Any]]]


def _isvc(fmt: str) -> dict[str, Any]:
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "detector", "namespace": "default"},
            "spec": {"predictor": {"model": {
                "modelFormat": {"name": fmt}, "protocolVersion": "v2",
                "storageUri": "s3://bucket/models/detector"}}}}


@pytest.fixture(scope="module")
def runtimes() -> list[dict[str, Any]]:
    from ._support import render_dir

    both = [*render_dir(str(MANIFESTS / "runtime")), *render_dir(str(MANIFESTS / "runtime-light"))]
    return copy.deepcopy(of_kind(both, "ClusterServingRuntime"))


def test_a_compiled_folder_selects_the_light_image_and_a_torch_folder_the_torch_one(
        runtimes: list[dict[str, Any]]) -> None:
    assert select_runtime(_isvc("kserve-detector-compiled"), runtimes)["metadata"]["name"] == \
        "kserve-detector-light"
    assert select_runtime(_isvc("torchvision-detection"), runtimes)["metadata"]["name"] == \
        "kserve-detector"
    light = predictor_container(_isvc("kserve-detector-compiled"), runtimes)
    assert light["image"].startswith("kserve-detector-light:")
    assert not any(e["name"] == "TORCH_HOME" for e in light.get("env", []))


def test_the_light_pod_is_the_torch_pod_with_less_memory(runtimes: list[dict[str, Any]]) -> None:
    light = predictor_container(_isvc("kserve-detector-compiled"), runtimes)
    torch = predictor_container(_isvc("torchvision-detection"), runtimes)
    for field in ("args", "ports", "startupProbe", "readinessProbe", "livenessProbe",
                  "lifecycle", "securityContext", "volumeMounts"):
        assert light.get(field) == torch.get(field), field
    memory = light["resources"]["limits"]["memory"]
    assert memory.endswith("Mi") or memory.endswith("Gi")
    assert light["resources"]["limits"]["memory"] != torch["resources"]["limits"]["memory"]
