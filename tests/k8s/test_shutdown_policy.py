"""Issue 19, finding 6: a pod that is told to stop gets to finish what it holds.

On SIGTERM the server drains for up to --grace_period seconds (predictor/config.py).
In Standard mode Kubernetes kills the pod terminationGracePeriodSeconds after it
starts stopping it, preStop included; its default (30 s, which KServe keeps) would cut
a full drain, and without a pause in preStop, requests routed before the endpoint
update reach a process already refusing them. Knative refuses both fields and drains
through its queue-proxy, with the revision timeout as the pod's grace period.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._kserve import mode, predictor_container
from ._support import ISVC_OVERLAYS, MANIFESTS, OVERLAYS_DIR, of_kind

pytestmark = pytest.mark.k8s

Render = Callable[[str | Path], list[dict[str, Any]]]
# Endpoint removal reaches kube-proxy and ingresses within a few seconds.
MIN_PAUSE_S = 5
MARGIN_S = 5
# Knative's revision timeout when the InferenceService sets none (config-defaults,
# revision-timeout-seconds: knative/serving knative-v1.21.1 config/core/configmaps/
# defaults.yaml).
KNATIVE_DEFAULT_TIMEOUT_S = 300


def grace_period(c: dict[str, Any]) -> int:
    """The server's --grace_period: the container's flag, else the flag's default."""
    for arg in c.get("args", []):
        if arg.startswith("--grace_period="):
            return int(arg.split("=", 1)[1])
    config = pytest.importorskip("predictor.config", reason="install the project")
    return int(config.ServerConfig.grace_period)


def pause(c: dict[str, Any]) -> int:
    """Seconds the preStop hook sleeps (0 without one)."""
    hook = c.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0
    command = hook["exec"]["command"]
    assert command[0] == "sleep", f"preStop runs {command}; expected a pause"
    return int(command[1])


@pytest.fixture(scope="module")
def overlays(render: Render) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each overlay's InferenceService and the container KServe will run for it."""
    cluster = of_kind(render(MANIFESTS / "runtime"), "ClusterServingRuntime")
    out = {}
    for name in ISVC_OVERLAYS:
        objects = render(OVERLAYS_DIR / name)
        (isvc,) = of_kind(objects, "InferenceService")
        out[name] = (isvc, predictor_container(isvc, of_kind(objects, "ServingRuntime") + cluster))
    return out


def test_the_drain_the_flag_promises_fits_before_sigkill_in_standard_mode(
        overlays: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> None:
    for name, (isvc, c) in overlays.items():
        if mode(isvc) != "Standard":
            continue
        seconds = isvc["spec"]["predictor"].get("terminationGracePeriodSeconds")
        assert seconds is not None, f"{name}: Kubernetes' 30 s default cuts a full drain"
        wait = pause(c)
        assert wait >= MIN_PAUSE_S, f"{name}: no pause while endpoints are removed"
        assert seconds >= wait + grace_period(c) + MARGIN_S, (
            f"{name}: {seconds} s grace < {wait} s pause + {grace_period(c)} s drain "
            f"+ {MARGIN_S} s")


def test_knative_pods_leave_the_drain_to_knative(
        overlays: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> None:
    for name, (isvc, c) in overlays.items():
        if mode(isvc) != "Knative":
            continue
        predictor = isvc["spec"]["predictor"]
        # knative/serving pkg/apis/serving/fieldmask.go: both refused by its webhook.
        assert "terminationGracePeriodSeconds" not in predictor, name
        assert "lifecycle" not in c, name
        timeout = predictor.get("timeout", KNATIVE_DEFAULT_TIMEOUT_S)
        assert timeout >= grace_period(c), (
            f"{name}: the pod's grace period is the revision timeout, {timeout} s")


def test_the_runtime_pauses_like_the_custom_container(render: Render) -> None:
    (runtime,) = of_kind(render(MANIFESTS / "runtime"), "ClusterServingRuntime")
    (base,) = of_kind(render(MANIFESTS / "base"), "InferenceService")
    assert runtime["spec"]["containers"][0]["lifecycle"] == predictor_container(base)["lifecycle"]
