"""The stand-in cluster refuses what KServe's validating webhooks refuse beyond the
deployment mode (issue 29, item 9): see _fake_admission.py for the rules and the
upstream files they follow. Each mistake below is one a user could make in an overlay
of their own; every shipped overlay is admitted.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._fakes import kubectl
from ._support import OVERLAYS, OVERLAYS_DIR, kustomize_command, render_dir

pytestmark = pytest.mark.k8s

Installed = Callable[[str], None]
Change = Callable[[dict[str, Any]], None]


@pytest.fixture
def ml(tmp_path: Path, installed: Installed) -> Path:
    if kustomize_command() is None:
        pytest.skip("kubectl is needed to render the overlays")
    installed("standard")
    assert kubectl(tmp_path, "create", "namespace", "ml").returncode == 0
    return tmp_path


def _apply(cluster: Path, objects: list[dict[str, Any]]) -> tuple[int, str]:
    import yaml

    proc = kubectl(cluster, "apply", "-n", "ml", "-f", "-", stdin=yaml.safe_dump_all(objects))
    return proc.returncode, proc.stderr


def _overlay(name: str, change: Change | None = None) -> list[dict[str, Any]]:
    objects = [copy.deepcopy(o) for o in render_dir(str(OVERLAYS_DIR / name))]
    if change is not None:
        change(next(o for o in objects if o["kind"] == "InferenceService"))
    return objects


def _set(*path_and_value: Any) -> Change:
    """Sets one field, named by its keys in order (an annotation key holds a "/")."""
    *parents, last, value = path_and_value

    def change(isvc: dict[str, Any]) -> None:
        node = isvc
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return change


REFUSED = {
    "a name with capitals": (
        "kind", _set("metadata", "name", "Detector"), "a InferenceService name must consist"),
    "an autoscaler class KServe does not know": (
        "kind", _set("metadata", "annotations", "serving.kserve.io/autoscalerClass", "kpa"),
        "[kpa] is not a supported autoscaler class type"),
    "scaleMetric beside KEDA": (
        "keda", _set("spec", "predictor", "scaleMetric", "cpu"),
        "ScaleMetric is not supported for KEDA"),
    "more minReplicas than maxReplicas": (
        "kind", _set("spec", "predictor", "minReplicas", 3),
        "'MinReplicas' cannot be greater than MaxReplicas"),
    "a CPU target over 100 %": (
        "standard-hpa", _set("spec", "predictor", "scaleTarget", 150),
        "the target utilization percentage should be a [1-100] integer"),
    "an HPA metric in Knative mode": (
        "knative", _set("spec", "predictor", "scaleMetric", "cpu"),
        "[cpu] is not a supported metric"),
    "a canary list in Knative mode": (
        "knative", _set("spec", "canary", [{"trafficPercent": 10, "predictor": {"name": "v2"}}]),
        "canary is only supported in Standard deployment mode"),
    "canaries over 100 %": (
        "kind", _set("spec", "canary", [{"trafficPercent": 60, "predictor": {"name": "a"}},
                                     {"trafficPercent": 50, "predictor": {"name": "b"}}]),
        "sum of canary trafficPercent values (110) must be <= 100"),
}


@pytest.mark.parametrize("mistake", sorted(REFUSED))
def test_kserve_webhook_refuses(mistake: str, ml: Path) -> None:
    overlay, change, message = REFUSED[mistake]

    rc, err = _apply(ml, _overlay(overlay, change))
    assert rc == 1
    assert "inferenceservice.kserve-webhook-server.validator" in err
    assert message in err


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_shipped_overlay_is_admitted(overlay: str, ml: Path) -> None:
    rc, err = _apply(ml, _overlay(overlay))
    assert rc == 0, err


def test_two_runtimes_tied_on_priority_are_refused(ml: Path) -> None:
    # Two auto-selected runtimes for one format at one priority: KServe could not pick.
    (runtime,) = _overlay("runtime-namespaced")
    assert _apply(ml, [runtime]) == (0, "")
    twin = copy.deepcopy(runtime)
    twin["metadata"]["name"] = "kserve-detector-twin"
    rc, err = _apply(ml, [twin])
    assert rc == 1
    assert ("same priority assigned for the model format torchvision-detection in the "
            "servingruntimes kserve-detector and kserve-detector-twin") in err
    twin["spec"]["supportedModelFormats"][0]["priority"] = 2
    assert _apply(ml, [twin]) == (0, "")


@pytest.mark.parametrize("server_side", [False, True])
def test_a_misspelt_field_is_refused_not_dropped(server_side: bool, ml: Path) -> None:
    # kubectl's default --validate=strict: the API server refuses a field the CRD does
    # not declare (a silently dropped imagePullPolicy would pull the kind image).
    import yaml

    def misspell(isvc: dict[str, Any]) -> None:
        container = isvc["spec"]["predictor"]["containers"][0]
        container["imagePullPolcy"] = container.pop("imagePullPolicy")

    side = ["--server-side"] if server_side else []
    proc = kubectl(ml, "apply", *side, "-n", "ml", "-f", "-",
                   stdin=yaml.safe_dump_all(_overlay("kind", misspell)))
    assert proc.returncode == 1
    assert ('strict decoding error: unknown field '
            '"spec.predictor.containers[0].imagePullPolcy"') in proc.stderr
