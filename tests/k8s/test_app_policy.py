"""manifests/app: the web backend's Deployment and Service, beside the InferenceService.

Checked against the InferenceService they call (its Service name and port as KServe
v0.20.0 makes them) and against what the kind script builds and loads.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ._kserve import mode, predictor_container
from ._support import ISVC_OVERLAYS, MANIFESTS, OVERLAYS_DIR, REPO_ROOT, only_isvc

pytestmark = pytest.mark.k8s

Render = Callable[[str | Path], list[dict[str, Any]]]
WEB_PORT = 8000
LABELS = ("name", "instance", "component", "part-of", "version", "managed-by")


@pytest.fixture(scope="module")
def app(render: Render) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in render(MANIFESTS / "app")}


def _pod(app: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return app["Deployment"]["spec"]["template"]  # type: ignore[no-any-return]


def _web(app: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = _pod(app)["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def _expand(env: list[dict[str, Any]], field_values: dict[str, str]) -> dict[str, str]:
    """Env values as the kubelet sets them: $(VAR) expands only from earlier entries."""
    out: dict[str, str] = {}
    for entry in env:
        if "valueFrom" in entry:
            out[entry["name"]] = field_values[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            out[entry["name"]] = re.sub(r"\$\((\w+)\)",
                                        lambda m: out.get(m.group(1), m.group(0)), entry["value"])
    return out


def test_image_is_pinned_and_the_one_the_kind_script_builds(
        app: dict[str, dict[str, Any]]) -> None:
    image = _web(app)["image"]
    assert image == "kserve-detector-web:0.1.0"
    script = (REPO_ROOT / "scripts" / "kind-e2e.sh").read_text(encoding="utf-8")
    assert f'WEB_IMAGE="${{WEB_IMAGE:-{image}}}"' in script


def test_probes_ask_the_apps_health_endpoint(app: dict[str, dict[str, Any]]) -> None:
    web = _web(app)
    ports = {p["name"]: p["containerPort"] for p in web["ports"]}
    assert ports == {"http": WEB_PORT}
    assert web["args"][web["args"].index("--port") + 1] == str(WEB_PORT)
    for probe in ("readinessProbe", "livenessProbe"):
        http = web[probe]["httpGet"]
        assert http["path"] == "/healthz"
        assert ports.get(http["port"], http["port"]) == WEB_PORT


def test_security_context_is_hardened_like_the_predictor(
        app: dict[str, dict[str, Any]], render: Render) -> None:
    web, pod = _web(app), _pod(app)["spec"]
    predictor = predictor_container(only_isvc(render(MANIFESTS / "base")))
    for key in ("runAsNonRoot", "runAsUser", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
                "capabilities", "seccompProfile"):
        assert web["securityContext"][key] == predictor["securityContext"][key], key
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False, "the app never calls the API server"
    mounts = {m["mountPath"]: m["name"] for m in web["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "read-only root needs a writable /tmp"


def test_resources_are_bounded(app: dict[str, dict[str, Any]]) -> None:
    resources = _web(app)["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_recommended_labels_and_matching_selectors(app: dict[str, dict[str, Any]]) -> None:
    deployment, service, pod = app["Deployment"], app["Service"], _pod(app)
    for obj in (deployment, service, pod):
        labels = obj["metadata"]["labels"]
        for key in LABELS:
            assert labels.get(f"app.kubernetes.io/{key}"), f"app.kubernetes.io/{key} missing"
    pod_labels = pod["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # A version in a selector would orphan the pods of every upgrade.
    assert "app.kubernetes.io/version" not in selector


def test_service_reaches_the_web_port(app: dict[str, dict[str, Any]]) -> None:
    (port,) = app["Service"]["spec"]["ports"]
    named = {p["name"]: p["containerPort"] for p in _web(app)["ports"]}
    assert named.get(port["targetPort"], port["targetPort"]) == WEB_PORT
    assert app["Service"]["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_app_calls_the_inference_service_in_its_namespace(
        app: dict[str, dict[str, Any]], render: Render) -> None:
    isvc = only_isvc(render(MANIFESTS / "base"))
    predictor = predictor_container(isvc)
    env = _expand(_web(app)["env"], {"metadata.namespace": "ns-x"})
    # Standard mode: Service <name>-predictor, first container port on port 80.
    assert mode(isvc) == "Standard"
    assert predictor["ports"][0]["name"] == "http1", "port 80 must be REST for the app"
    expected = f"http://{isvc['metadata']['name']}-predictor.ns-x.svc.cluster.local"
    assert env["DETECT_CLIENT_URL"] == expected
    model_name = next(a.split("=", 1)[1] for a in predictor["args"]
                      if a.startswith("--model_name="))
    assert env["DETECT_CLIENT_MODEL"] == model_name
    assert env["DETECT_CLIENT_PROTOCOL"] in {"v1", "v2"}


def _service_ports(c: dict[str, Any]) -> dict[int, str]:
    """Service port -> container port name, as KServe v0.20.0 makes them in Standard
    mode: the first container port on 80, the others on their own number
    (reconcilers/service/service_reconciler.go)."""
    first, *rest = c["ports"]
    return {80: first["name"], **{p["containerPort"]: p["name"] for p in rest}}


@pytest.mark.parametrize("overlay", ISVC_OVERLAYS)
def test_web_app_never_sends_rest_to_the_grpc_port(overlay: str, render: Render) -> None:
    # Issue 19, finding 7: the grpc overlay puts h2c on port 80, where the app sent REST.
    objects = render(OVERLAYS_DIR / overlay)
    isvc = only_isvc(objects)
    if mode(isvc) != "Standard":
        return
    cluster = [o for o in render(MANIFESTS / "runtime") if o["kind"] == "ClusterServingRuntime"]
    own = [o for o in objects if o["kind"] == "ServingRuntime"]
    predictor = predictor_container(isvc, own + cluster)
    app_dir = "app-grpc" if "grpc" in overlay else "app"
    deployment = next(o for o in render(MANIFESTS / app_dir) if o["kind"] == "Deployment")
    (web,) = deployment["spec"]["template"]["spec"]["containers"]
    url = urlsplit(_expand(web["env"], {"metadata.namespace": "ns-x"})["DETECT_CLIENT_URL"])
    assert url.hostname == f"{isvc['metadata']['name']}-predictor.ns-x.svc.cluster.local"
    port = url.port or 80
    assert _service_ports(predictor).get(port) == "http1", (
        f"with overlays/{overlay}, manifests/{app_dir} sends REST to Service port {port}, "
        f"which is {_service_ports(predictor).get(port)!r}")


def test_kind_script_deploys_the_app_that_matches_the_grpc_overlay(tmp_path: Path) -> None:
    from ._fakes import run_script

    proc = run_script(tmp_path, "--dry-run", "deploy", OVERLAY="grpc")
    assert proc.returncode == 0, proc.stderr
    assert "  - ../../manifests/app-grpc\n" in proc.stdout
