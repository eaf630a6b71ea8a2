"""The detector as Kubernetes runs it: InferenceService Ready, predictor pod hardened.

These tests talk to a cluster through the `kubernetes` client, so they run only when
asked: ``E2E_KUBE=1`` plus a kubeconfig (``scripts/kind-e2e.sh e2e`` sets both for
its kind cluster). Settings: ``E2E_KUBE_CONTEXT`` (default: the current context),
``E2E_NAMESPACE`` (default ``default``), ``E2E_ISVC_NAME`` and ``E2E_MODEL_NAME``
(default ``detector``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
CONTAINER = "kserve-container"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


NAMESPACE = _env("E2E_NAMESPACE", "default")
ISVC_NAME = _env("E2E_ISVC_NAME", "detector")
MODEL_NAME = _env("E2E_MODEL_NAME", "detector")


@pytest.fixture(scope="module")
def api_client() -> Any:
    """A client for the cluster under test; skips when there is none to reach."""
    if os.environ.get("E2E_KUBE", "").lower() not in {"1", "true", "yes"}:
        pytest.skip("cluster checks are off: set E2E_KUBE=1 with a kubeconfig "
                    "(scripts/kind-e2e.sh e2e does this for its kind cluster)")
    try:
        from kubernetes import client, config
    except ImportError:
        pytest.skip("the kubernetes package is not installed (pip install kubernetes)")
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            context=os.environ.get("E2E_KUBE_CONTEXT") or None)
    except Exception as exc:  # ConfigException, missing file, bad context...
        pytest.skip(f"E2E_KUBE=1 but no usable kubeconfig: {exc}")
    api = client.ApiClient()
    try:
        client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as exc:  # connection refused, TLS, auth...
        pytest.skip(f"E2E_KUBE=1 but no cluster is reachable: {exc}")
    return api


@pytest.fixture(scope="module")
def isvc(api_client: Any) -> dict[str, Any]:
    """The InferenceService object as the API server holds it."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        obj = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, ISVC_NAME)
    except ApiException as exc:
        pytest.fail(f"InferenceService {NAMESPACE}/{ISVC_NAME} not readable: "
                    f"{exc.status} {exc.reason}")
    assert isinstance(obj, dict)
    return obj


@pytest.fixture(scope="module")
def predictor_pods(api_client: Any) -> list[Any]:
    """Running predictor pods of the InferenceService (at least one, or the test fails)."""
    from kubernetes import client

    pods = client.CoreV1Api(api_client).list_namespaced_pod(
        NAMESPACE, label_selector=f"serving.kserve.io/inferenceservice={ISVC_NAME}").items
    pods = [p for p in pods
            if p.metadata is not None and p.metadata.deletion_timestamp is None
            and p.spec is not None and any(c.name == CONTAINER for c in p.spec.containers)]
    assert pods, f"no predictor pod with a {CONTAINER} container for {NAMESPACE}/{ISVC_NAME}"
    return pods


def _container(pod: Any, name: str) -> Any:
    return next(c for c in pod.spec.containers if c.name == name)


def _http_port(container: Any) -> int:
    for arg in container.args or []:
        if arg.startswith("--http_port="):
            return int(arg.split("=", 1)[1])
    return 8080


def test_inference_service_is_ready(isvc: dict[str, Any]) -> None:
    conditions = isvc.get("status", {}).get("conditions", [])
    ready = {c["type"]: c for c in conditions}.get("Ready")
    assert ready is not None, f"InferenceService {ISVC_NAME} has no Ready condition yet"
    assert ready["status"] == "True", (
        f"InferenceService {ISVC_NAME} not Ready; conditions: {json.dumps(conditions)}")


def test_predictor_pods_are_running_and_ready(predictor_pods: list[Any]) -> None:
    for pod in predictor_pods:
        assert pod.status.phase == "Running", f"{pod.metadata.name}: phase {pod.status.phase}"
        status = {s.name: s for s in pod.status.container_statuses or []}
        assert status[CONTAINER].ready, f"{pod.metadata.name}: {CONTAINER} not ready"


def test_predictor_runs_as_non_root(predictor_pods: list[Any]) -> None:
    for pod in predictor_pods:
        container_ctx = _container(pod, CONTAINER).security_context
        pod_ctx = pod.spec.security_context

        def effective(field: str, c_ctx: Any = container_ctx, p_ctx: Any = pod_ctx) -> Any:
            value = getattr(c_ctx, field, None) if c_ctx is not None else None
            if value is None and p_ctx is not None:
                value = getattr(p_ctx, field, None)
            return value

        name = pod.metadata.name
        assert effective("run_as_non_root") is True, f"{name}: runAsNonRoot is not set"
        assert effective("run_as_user") not in (0, None), f"{name}: runAsUser is root or unset"
        assert container_ctx is not None, f"{name}: {CONTAINER} has no securityContext"
        assert container_ctx.read_only_root_filesystem, f"{name}: root filesystem is writable"
        assert container_ctx.allow_privilege_escalation is False, (
            f"{name}: privilege escalation allowed")


def test_predictor_probes_ask_the_model(predictor_pods: list[Any]) -> None:
    ready_path = f"/v2/models/{MODEL_NAME}/ready"
    for pod in predictor_pods:
        container = _container(pod, CONTAINER)
        name = pod.metadata.name
        liveness = container.liveness_probe
        assert liveness is not None, f"{name}: no liveness probe"
        assert liveness.http_get is not None, f"{name}: liveness is not an HTTP check"
        assert liveness.http_get.path == "/v2/health/live"
        assert liveness.http_get.port in (_http_port(container), "http1")

        readiness = container.readiness_probe
        if readiness is not None:
            assert readiness.http_get is not None, f"{name}: readiness is not an HTTP check"
            assert readiness.http_get.path == ready_path
            assert readiness.http_get.port in (_http_port(container), "http1")
        else:
            # Knative moves the user container's readiness probe into its
            # queue-proxy sidecar, as JSON in SERVING_READINESS_PROBE.
            queue = next((c for c in pod.spec.containers if c.name == "queue-proxy"), None)
            assert queue is not None, f"{name}: {CONTAINER} has no readiness probe"
            env = {e.name: e.value for e in queue.env or []}
            assert ready_path in env.get("SERVING_READINESS_PROBE", ""), (
                f"{name}: queue-proxy does not probe {ready_path}")
