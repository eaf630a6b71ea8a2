"""Issue 19, findings 1, 2 and 4: what a real cluster refused, refused here too.

The first tests show the fake kubectl (_fake_kubectl.py) refusing what the real
kubectl and API server refuse where these bugs lived; the others run
scripts/kind-e2e.sh against it and check that each step now gets past the refusal a
user saw. Run against the script as it was, the finding tests fail with the very
error the user met ("no matches for kind", "failed calling webhook"), or deploy
no ScaledObject a Prometheus could feed.
"""

from __future__ import annotations

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
    run_script,
)
from ._support import OVERLAYS_DIR, kustomize_command, only_isvc, render_dir

pytestmark = pytest.mark.k8s

Installed = Callable[[str], None]
GH = "https://github.com"
KSERVE = f"{GH}/kserve/kserve/releases/download/v0.20.0"
KNATIVE = f"{GH}/knative/serving/releases/download/knative-v1.21.1"
KOURIER = f"{GH}/knative-extensions/net-kourier/releases/download/knative-v1.21.1/kourier.yaml"
CERT_MANAGER = f"{GH}/cert-manager/cert-manager/releases/download/v1.17.0/cert-manager.yaml"


def _ok(proc: object) -> None:
    assert getattr(proc, "returncode", 1) == 0, getattr(proc, "stderr", "")


def _cert_manager(tmp_path: Path) -> None:
    _ok(kubectl(tmp_path, "apply", "-f", CERT_MANAGER))
    _ok(kubectl(tmp_path, "-n", "cert-manager", "wait", "--for=condition=Available",
                "deployment", "--all"))


# --- the fake refuses what the real cluster refuses ------------------------------------

def test_fake_refuses_an_object_whose_crd_came_in_the_same_apply(tmp_path: Path) -> None:
    _cert_manager(tmp_path)
    _ok(kubectl(tmp_path, "create", "namespace", "kserve"))
    proc = kubectl(tmp_path, "apply", "--server-side", "-f", f"{KSERVE}/kserve.yaml")
    assert proc.returncode == 1
    assert 'no matches for kind "ClusterStorageContainer"' in proc.stderr
    # What could be created was (as with kubectl): the CRDs and the controllers.
    assert cluster_object(tmp_path, "Deployment", "kserve", "kserve-controller-manager")
    assert cluster_object(tmp_path, "ClusterStorageContainer", None, "default") is None


def test_fake_refuses_a_namespaced_object_in_a_missing_namespace(tmp_path: Path) -> None:
    _cert_manager(tmp_path)
    _ok(kubectl(tmp_path, "apply", "-f", f"{KSERVE}/kserve-crds.yaml"))
    _ok(kubectl(tmp_path, "wait", "--for=condition=Established",
                "crd/clusterstoragecontainers.serving.kserve.io"))
    proc = kubectl(tmp_path, "apply", "-f", f"{KSERVE}/kserve.yaml")
    assert proc.returncode == 1
    assert 'namespaces "kserve" not found' in proc.stderr
    assert "no matches for kind" not in proc.stderr


def test_fake_refuses_a_config_patch_until_knatives_webhook_serves(tmp_path: Path) -> None:
    _ok(kubectl(tmp_path, "apply", "-f", f"{KNATIVE}/serving-crds.yaml"))
    _ok(kubectl(tmp_path, "wait", "--for=condition=Established", "crd", "-l",
                "knative.dev/crd-install=true"))
    _ok(kubectl(tmp_path, "apply", "-f", f"{KNATIVE}/serving-core.yaml"))
    _ok(kubectl(tmp_path, "apply", "-f", KOURIER))
    patch = ["-n", "knative-serving", "patch", "configmap/config-network", "--type", "merge",
             "-p", '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}']
    refused = kubectl(tmp_path, *patch)
    assert refused.returncode == 1
    assert 'failed calling webhook "config.webhook.serving.knative.dev"' in refused.stderr
    _ok(kubectl(tmp_path, "-n", "knative-serving", "wait", "--for=condition=Available",
                "deployment", "--all"))
    _ok(kubectl(tmp_path, *patch))
    config = cluster_object(tmp_path, "ConfigMap", "knative-serving", "config-network")
    assert config is not None
    assert config["data"]["ingress-class"] == "kourier.ingress.networking.knative.dev"


def test_fake_refuses_a_deployment_mode_change(tmp_path: Path, installed: Installed) -> None:
    if kustomize_command() is None:
        pytest.skip("kubectl is needed to render the overlays")
    installed("knative")
    _ok(kubectl(tmp_path, "create", "namespace", "ml"))
    _ok(kubectl(tmp_path, "apply", "-k", "manifests/overlays/model", "-n", "ml"))
    proc = kubectl(tmp_path, "apply", "-k", "manifests/overlays/knative-model", "-n", "ml")
    assert proc.returncode == 1
    assert "deploymentMode cannot be changed from 'Standard' to 'Knative'" in proc.stderr


# --- finding 1 -------------------------------------------------------------------------

def test_up_on_a_fresh_cluster_gets_past_no_matches_for_kind_cluster_storage_container(
        tmp_path: Path) -> None:
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="other")
    assert "no matches for kind" not in proc.stderr
    assert proc.returncode == 0, proc.stderr
    ran = calls(tmp_path)
    crds = first_line_with(ran, "v0.20.0/kserve-crds.yaml")
    established = first_line_with(ran, "wait --for=condition=Established")
    assert "crd/clusterstoragecontainers.serving.kserve.io" in ran[established]
    assert crds < established < first_line_with(ran, "v0.20.0/kserve.yaml")
    assert cluster_object(tmp_path, "ClusterStorageContainer", None, "default")


# --- finding 2 -------------------------------------------------------------------------

def test_knative_up_gets_past_failed_calling_webhook_on_config_network(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="other",
                      KNATIVE="1")
    assert "failed calling webhook" not in proc.stderr
    assert proc.returncode == 0, proc.stderr
    ran = calls(tmp_path)
    webhook_up = first_line_with(ran, "-n knative-serving wait --for=condition=Available")
    assert webhook_up < first_line_with(ran, "patch configmap/config-network")
    assert webhook_up < first_line_with(ran, "patch configmap/config-deployment")
    network = cluster_object(tmp_path, "ConfigMap", "knative-serving", "config-network")
    assert network is not None
    assert network["data"]["ingress-class"] == "kourier.ingress.networking.knative.dev"


def test_knative_up_fetches_kourier_from_its_current_owner(tmp_path: Path) -> None:
    # Finding 8: net-kourier lives in knative-extensions now.
    proc = run_script(tmp_path, "--dry-run", "up", KNATIVE="1")
    assert f"apply -f {KOURIER}" in proc.stdout
    assert "github.com/knative/net-kourier" not in proc.stdout


# --- finding 4 -------------------------------------------------------------------------

def _e2e_ports() -> dict[str, str]:
    import socket

    sockets = [socket.socket() for _ in range(4)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        ports = [str(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()
    return dict(zip(("LOCAL_PORT", "LOCAL_GRPC_PORT", "LOCAL_WEB_PORT",
                     "LOCAL_PROMETHEUS_PORT"), ports, strict=True))


def test_keda_gives_the_scaled_object_a_prometheus_to_read(
        tmp_path: Path, installed: Installed) -> None:
    if kustomize_command() is None:
        pytest.skip("kubectl is needed to render the overlays")
    up = run_script(tmp_path, "up", tools=SUCCEEDING_TOOLS, FAKE_CLUSTERS="other", KEDA="1")
    assert up.returncode == 0, up.stderr
    forget_calls(tmp_path)
    deploy = run_script(tmp_path, "deploy", tools=SUCCEEDING_TOOLS, KEDA="1", WEB="0")
    assert deploy.returncode == 0, deploy.stderr
    isvc = cluster_object(tmp_path, "InferenceService", "kserve-detector", "detector")
    assert isvc is not None
    assert isvc["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    (metric,) = isvc["spec"]["predictor"]["autoScaling"]["metrics"]
    address = metric["external"]["metric"]["serverAddress"]
    host = address.split("://", 1)[1].split(":", 1)[0].split("/", 1)[0]
    service, namespace = host.split(".")[:2]
    assert cluster_object(tmp_path, "Service", namespace, service), (
        f"the ScaledObject reads {address}, and no such Service was installed")
    assert cluster_object(tmp_path, "Deployment", namespace, service)
    # The overlay deployed is the keda one made for kind.
    expected = only_isvc(list(render_dir(str(OVERLAYS_DIR / "kind-keda"))))
    assert metric == expected["spec"]["predictor"]["autoScaling"]["metrics"][0]


@pytest.mark.parametrize(("answer", "ok"), [
    ('{"status": "success", "data": {"resultType": "vector", '
     '"result": [{"metric": {}, "value": [1, "24"]}]}}', True),
    ('{"status": "success", "data": {"resultType": "vector", "result": []}}', False),
])
def test_keda_e2e_asks_prometheus_the_scaled_objects_query(
        tmp_path: Path, installed: Installed, answer: str, ok: bool) -> None:
    if kustomize_command() is None:
        pytest.skip("kubectl is needed to render the overlays")
    installed("keda")
    deploy = run_script(tmp_path, "deploy", tools=SUCCEEDING_TOOLS, KEDA="1", WEB="0")
    assert deploy.returncode == 0, deploy.stderr
    forget_calls(tmp_path)
    ports = _e2e_ports()
    proc = run_script(tmp_path, "e2e", tools=SUCCEEDING_TOOLS, KEDA="1", WEB="0",
                      FAKE_PROM_ANSWER=answer, PYTHON=sys.executable,
                      PROMETHEUS_RETRIES="2", PROMETHEUS_RETRY_DELAY="0",
                      PYTEST=str(tmp_path / "pytest-bin" / "pytest"), **ports)
    ran = calls(tmp_path)
    assert any(c.endswith(f"svc/prometheus {ports['LOCAL_PROMETHEUS_PORT']}:9090") for c in ran)
    query = next(c for c in ran if "/api/v1/query" in c)
    assert "query=sum(max by (namespace, pod) (detector_queue_depth" in query
    if ok:
        assert proc.returncode == 0, proc.stderr
        assert "keda: the query answers 24" in proc.stdout
    else:
        assert proc.returncode != 0
        assert "KEDA would read 0" in proc.stderr
