"""Moving the predictor between KServe's HPA and KEDA in one namespace (issue 29, item 2).

`scripts/kind-e2e.sh all` deploys overlays/kind, for which KServe makes an HPA
``detector-predictor`` (autoscalerClass defaults to hpa). `KEDA=1 ... all` then deploys
kind-keda into the same namespace: KServe switches to its KEDA reconciler and nothing
deletes that HPA, so KEDA's admission webhook refuses the ScaledObject ("already
managed by the hpa") and the InferenceService never gets Ready. The fake cluster
(_fake_kserve.py) does what KServe and KEDA do; the script now hands the predictor over.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ._fakes import (
    SUCCEEDING_TOOLS,
    calls,
    cluster_object,
    first_line_with,
    forget_calls,
    kubectl,
    on_node,
    run_script,
)
from ._support import kustomize_command

pytestmark = pytest.mark.k8s

Installed = Callable[[str], None]
NS = "kserve-detector"


@pytest.fixture(autouse=True)
def _needs_kubectl() -> None:
    if kustomize_command() is None:
        pytest.skip("kubectl is needed to render the overlays")


def _ok(proc: object) -> None:
    assert getattr(proc, "returncode", 1) == 0, getattr(proc, "stderr", "")


def _e2e_env(tmp_path: Path) -> dict[str, str]:
    sockets = [socket.socket() for _ in range(4)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        ports = [str(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()
    return {**dict(zip(("LOCAL_PORT", "LOCAL_GRPC_PORT", "LOCAL_WEB_PORT",
                        "LOCAL_PROMETHEUS_PORT"), ports, strict=True)),
            "PYTEST": str(tmp_path / "pytest-bin" / "pytest"), "PYTHON": sys.executable,
            "WEB": "0", "PROMETHEUS_RETRIES": "2", "PROMETHEUS_RETRY_DELAY": "0"}


def _all(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    if (tmp_path / "calls.log").exists():
        forget_calls(tmp_path)
    clusters = "kserve-detector" if (tmp_path / "calls.log.state.json").exists() else "other"
    return run_script(tmp_path, "all", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS=clusters,
                      **_e2e_env(tmp_path), **env)


# --- the fake refuses what KServe and KEDA refuse ----------------------------------------

def test_fake_keda_refuses_a_scaled_object_beside_kserves_hpa(
        tmp_path: Path, installed: Installed) -> None:
    installed("keda")
    on_node(tmp_path, "kserve-detector:0.1.0")
    _ok(kubectl(tmp_path, "create", "namespace", "ml"))
    _ok(kubectl(tmp_path, "apply", "-k", "manifests/overlays/kind", "-n", "ml"))
    _ok(kubectl(tmp_path, "-n", "ml", "wait", "--for=condition=Ready", "isvc/detector"))
    hpa = cluster_object(tmp_path, "HorizontalPodAutoscaler", "ml", "detector-predictor")
    assert hpa is not None, "KServe makes an HPA for the default autoscaler class"
    _ok(kubectl(tmp_path, "apply", "-k", "manifests/overlays/kind-keda", "-n", "ml"))
    proc = kubectl(tmp_path, "-n", "ml", "wait", "--for=condition=Ready", "isvc/detector")
    assert proc.returncode == 1
    assert ("the workload 'detector-predictor' of type 'apps/v1.Deployment' is already "
            "managed by the hpa 'detector-predictor'") in proc.stderr
    assert cluster_object(tmp_path, "ScaledObject", "ml", "detector-predictor") is None


def test_fake_makes_no_scaled_object_without_keda(tmp_path: Path, installed: Installed) -> None:
    # Issue 29, item 9: the stand-in used to answer a ScaledObject's query whether or not
    # KEDA was installed.
    installed("standard")
    _ok(kubectl(tmp_path, "create", "namespace", "ml"))
    _ok(kubectl(tmp_path, "apply", "-k", "manifests/overlays/kind-keda", "-n", "ml"))
    proc = kubectl(tmp_path, "-n", "ml", "wait", "--for=condition=Ready", "isvc/detector")
    assert proc.returncode == 1
    assert 'no matches for kind "ScaledObject"' in proc.stderr
    got = kubectl(tmp_path, "-n", "ml", "get", "scaledobject/detector-predictor", "-o",
                  "jsonpath={.spec.triggers[0].metadata.query}")
    assert got.returncode == 1
    assert got.stdout == ""


# --- the script hands the predictor over ---------------------------------------------

def test_all_then_keda_all_in_one_namespace_scales_with_keda(tmp_path: Path) -> None:
    _ok(_all(tmp_path))
    assert cluster_object(tmp_path, "HorizontalPodAutoscaler", NS, "detector-predictor")
    proc = _all(tmp_path, KEDA="1")
    assert "already managed by the hpa" not in proc.stderr
    _ok(proc)
    ran = calls(tmp_path)
    applied = first_line_with(ran, "apply -k")
    deleted = first_line_with(ran, f"-n {NS} delete hpa detector-predictor")
    assert applied < deleted < first_line_with(ran, "wait --for=condition=Ready")
    so = cluster_object(tmp_path, "ScaledObject", NS, "detector-predictor")
    assert so is not None
    assert "detector_queue_depth" in so["spec"]["triggers"][0]["metadata"]["query"]
    assert cluster_object(tmp_path, "HorizontalPodAutoscaler", NS, "detector-predictor") is None
    assert cluster_object(tmp_path, "HorizontalPodAutoscaler", NS, "keda-hpa-detector-predictor")
    # The e2e step asked Prometheus the ScaledObject's own query.
    assert any("/api/v1/query" in c for c in ran)


def test_keda_all_then_plain_all_hands_the_predictor_back_to_kserves_hpa(
        tmp_path: Path) -> None:
    _ok(_all(tmp_path, KEDA="1"))
    assert cluster_object(tmp_path, "ScaledObject", NS, "detector-predictor")
    _ok(_all(tmp_path))
    assert any(f"-n {NS} delete scaledobject detector-predictor" in c for c in calls(tmp_path))
    assert cluster_object(tmp_path, "ScaledObject", NS, "detector-predictor") is None
    # One autoscaler on the Deployment: KServe's, not KEDA's beside it.
    assert cluster_object(tmp_path, "HorizontalPodAutoscaler", NS, "detector-predictor")
    assert cluster_object(tmp_path, "HorizontalPodAutoscaler", NS,
                          "keda-hpa-detector-predictor") is None


def test_a_fresh_namespace_deletes_nothing(tmp_path: Path) -> None:
    _ok(_all(tmp_path, KEDA="1"))
    assert not any(" delete " in c for c in calls(tmp_path))
