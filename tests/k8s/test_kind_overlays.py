"""Every overlay scripts/kind-e2e.sh accepts starts on kind (issue 29, item 1).

`OVERLAY=grpc scripts/kind-e2e.sh deploy` used to apply overlays/grpc as it is: no
`--demo_if_empty` (nothing fills /mnt/models on kind, so the server exits 2 and the pod
crash-loops), an image pulled from a registry that does not have it, 2 CPUs and 2 GiB
asked of a laptop, and no cluster-local label. The script now deploys only kind
variants: each overlay it accepts is rendered here, the way the script would deploy
it, and checked for what kind needs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._fakes import run_script
from ._kserve import mode, predictor_container
from ._support import MANIFESTS, OVERLAYS, OVERLAYS_DIR, of_kind

pytestmark = pytest.mark.k8s

Render = Callable[[str | Path], list[dict[str, Any]]]
GPU = "nvidia.com/gpu"
# What one laptop kind node can give one predictor (kind-config.yaml: one node).
KIND_MAX_CPU_REQUEST = 1.0
KIND_MAX_MEMORY_REQUEST = 2 * 2**30


def _deployed(tmp_path: Path, overlay: str) -> str | None:
    """The overlay `OVERLAY=<overlay> scripts/kind-e2e.sh deploy` applies, or None if refused."""
    knative = "1" if "knative" in overlay else "0"
    proc = run_script(tmp_path, "--dry-run", "deploy", OVERLAY=overlay, KNATIVE=knative)
    if proc.returncode != 0:
        assert "not made for kind" in proc.stderr, proc.stderr
        return None
    (found,) = re.findall(r"^  - \.\./\.\./manifests/overlays/(\S+)$", proc.stdout, re.MULTILINE)
    return str(found)


def _bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return float(quantity[:-2]) * factor
    return float(quantity)


def _cores(quantity: str | int) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_the_kind_script_accepts_starts_on_kind(
        overlay: str, tmp_path: Path, render: Render) -> None:
    deployed = _deployed(tmp_path, overlay)
    if deployed is None:
        return  # refused, with a message listing the kind overlays
    assert deployed == "kind" or deployed.startswith("kind-"), deployed
    objects = render(OVERLAYS_DIR / deployed)
    (isvc,) = of_kind(objects, "InferenceService")
    cluster = of_kind(render(MANIFESTS / "runtime"), "ClusterServingRuntime")
    c = predictor_container(isvc, of_kind(objects, "ServingRuntime") + cluster)
    args = c.get("args", [])
    # Nothing fills /mnt/models on kind: without the demo the server exits 2 at start.
    assert "--demo_if_empty" in args, f"{deployed}: the server would exit on an empty model folder"
    assert "--device=cuda" not in args
    # The image exists only on the node (kind load): never pulled.
    assert c["imagePullPolicy"] == "Never", f"{deployed} would try to pull {c['image']}"
    requests = c["resources"]["requests"]
    assert _cores(requests["cpu"]) <= KIND_MAX_CPU_REQUEST, f"{deployed} asks {requests}"
    assert _bytes(requests["memory"]) <= KIND_MAX_MEMORY_REQUEST, f"{deployed} asks {requests}"
    assert GPU not in c["resources"].get("limits", {})
    assert isvc["spec"]["predictor"].get("maxReplicas", 1) <= 2
    # No ingress on kind: the route must stay inside the cluster.
    label = ("networking.knative.dev/visibility" if mode(isvc) == "Knative"
             else "networking.kserve.io/visibility")
    assert isvc["metadata"]["labels"].get(label) == "cluster-local", deployed


def test_grpc_on_kind_runs_the_kind_variant_and_the_app_beside_it(tmp_path: Path) -> None:
    assert _deployed(tmp_path, "grpc") == "kind-grpc"
    proc = run_script(tmp_path, "--dry-run", "deploy", OVERLAY="grpc")
    assert "  - ../../manifests/app-grpc\n" in proc.stdout


@pytest.mark.parametrize("overlay", ["gpu", "model-gpu", "storage-uri", "standard-hpa"])
def test_overlays_with_no_kind_variant_are_refused_naming_the_kind_ones(
        overlay: str, tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--dry-run", "deploy", OVERLAY=overlay)
    assert proc.returncode != 0
    assert "not made for kind" in proc.stderr
    assert "kind-grpc" in proc.stderr
    assert "kind-runtime" in proc.stderr
