"""The serving runtime: deploying by model format gives the same pod as the custom container.

KServe's rules for picking a runtime and merging the InferenceService over it are
mirrored in ``_kserve.py`` (with the upstream files they come from); these tests check
the runtime, the overlays that use it, and the Knative canary.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._kserve import mode, predictor_container, predictor_volumes, select_runtime
from ._support import ISVC_OVERLAYS, MANIFESTS, OVERLAYS_DIR, of_kind, only_isvc

pytestmark = pytest.mark.k8s

Render = Callable[[str | Path], list[dict[str, Any]]]
FORMAT = "torchvision-detection"


@pytest.fixture(scope="module")
def cluster_runtime(render: Render) -> dict[str, Any]:
    (runtime,) = of_kind(render(MANIFESTS / "runtime"), "ClusterServingRuntime")
    return runtime


def _overlay(render: Render, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    objects = render(OVERLAYS_DIR / name)
    return only_isvc(objects), of_kind(objects, "ServingRuntime")


def _flags(args: list[str]) -> dict[str, str]:
    out = {}
    for arg in args:
        name, _, value = arg[2:].partition("=")
        out[name] = value
    return out


def test_cluster_runtime_claims_the_model_format(cluster_runtime: dict[str, Any]) -> None:
    spec = cluster_runtime["spec"]
    (fmt,) = spec["supportedModelFormats"]
    assert fmt["name"] == FORMAT
    assert fmt["autoSelect"] is True
    # What the server speaks: V1 and V2 REST on one port, V2 gRPC on the other.
    assert set(spec["protocolVersions"]) == {"v1", "v2", "grpc-v2"}
    assert not spec.get("multiModel"), "one model per server"
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container", "KServe merges the model into this name"
    flags = _flags(container["args"])
    assert flags["model_name"] == "{{.Name}}", "the model must be named after the InferenceService"
    assert flags["model_dir"] == "/mnt/models", "where KServe's storage initializer writes"


def test_the_runtime_path_runs_the_same_pod_as_the_custom_container(
        render: Render, cluster_runtime: dict[str, Any]) -> None:
    # Differential: ../model (by format) against ../base (custom container).
    custom = predictor_container(only_isvc(render(MANIFESTS / "base")))
    model_isvc = only_isvc(render(MANIFESTS / "model"))
    by_format = predictor_container(model_isvc, [cluster_runtime])
    for field in ("image", "imagePullPolicy", "ports", "env", "resources", "startupProbe",
                  "readinessProbe", "livenessProbe", "securityContext", "volumeMounts"):
        assert by_format.get(field) == custom.get(field), field
    assert _flags(by_format["args"]) == _flags(custom["args"])
    base_volumes = only_isvc(render(MANIFESTS / "base"))["spec"]["predictor"]["volumes"]
    assert predictor_volumes(model_isvc, [cluster_runtime]) == base_volumes


def test_namespaced_runtime_is_the_cluster_one_in_a_namespace(
        render: Render, cluster_runtime: dict[str, Any]) -> None:
    (namespaced,) = render(OVERLAYS_DIR / "runtime-namespaced")
    assert namespaced["kind"] == "ServingRuntime"
    assert namespaced["spec"] == cluster_runtime["spec"]
    assert namespaced["metadata"]["name"] == cluster_runtime["metadata"]["name"]
    assert "namespace" not in namespaced["metadata"], "apply it with -n into any namespace"


@pytest.mark.parametrize(("name", "kind", "runtime"), [
    ("model", "ClusterServingRuntime", "kserve-detector"),
    ("model-gpu", "ServingRuntime", "kserve-detector-gpu"),
    ("knative-model", "ServingRuntime", "kserve-detector-knative"),
    ("kind-runtime", "ServingRuntime", "kserve-detector"),
    ("knative-canary", "ServingRuntime", "kserve-detector-knative"),
])
def test_model_overlays_get_the_intended_runtime(
        name: str, kind: str, runtime: str, render: Render,
        cluster_runtime: dict[str, Any]) -> None:
    isvc, own = _overlay(render, name)
    chosen = select_runtime(isvc, own + [cluster_runtime])
    assert (chosen["kind"], chosen["metadata"]["name"]) == (kind, runtime)


@pytest.mark.parametrize("name", ["model", "model-gpu", "knative-canary"])
def test_model_overlays_load_weights_from_storage(name: str, render: Render) -> None:
    isvc, _ = _overlay(render, name)
    model = isvc["spec"]["predictor"]["model"]
    assert model["storageUri"].split("://", 1)[0] in {"s3", "gs", "pvc", "https", "http"}
    # Object-store credentials come from the ServiceAccount's Secret.
    assert isvc["spec"]["predictor"].get("serviceAccountName")


def test_kind_runtime_serves_the_demo_without_storage(render: Render) -> None:
    isvc, _ = _overlay(render, "kind-runtime")
    assert "storageUri" not in isvc["spec"]["predictor"]["model"], "kind has no object store"


def test_runtimes_that_share_a_namespace_never_tie(render: Render) -> None:
    # KServe's webhook refuses a second runtime of the same kind and namespace that
    # auto-selects the same format at the same priority
    # (pkg/webhook/admission/servingruntime/servingruntime_webhook.go).
    namespaced = of_kind(render(OVERLAYS_DIR / "runtime-namespaced"), "ServingRuntime") + \
        of_kind(render(OVERLAYS_DIR / "knative-canary"), "ServingRuntime") + \
        of_kind(render(OVERLAYS_DIR / "model-gpu"), "ServingRuntime")
    claims = [(f["name"], f.get("version"), f.get("priority"))
              for rt in namespaced for f in rt["spec"]["supportedModelFormats"]
              if f.get("autoSelect")]
    assert len(claims) == len(set(claims)), claims


def test_knative_canary_splits_traffic_between_two_weights(render: Render) -> None:
    isvc, own = _overlay(render, "knative-canary")
    stable, _ = _overlay(render, "model")
    predictor = isvc["spec"]["predictor"]
    assert mode(isvc) == "Knative"
    assert 0 < predictor["canaryTrafficPercent"] < 100
    # A canary revision exists only when the spec changes: the weights do here.
    assert predictor["model"]["storageUri"] != stable["spec"]["predictor"]["model"]["storageUri"]
    annotations = isvc["metadata"]["annotations"]
    assert annotations.get("serving.kserve.io/enable-tag-routing") == "true"
    (runtime,) = own
    c = predictor_container(isvc, own)
    assert [p["name"] for p in c["ports"]] == ["http1"], "Knative serves one port"
    assert not any(f.get("autoSelect") for f in runtime["spec"]["supportedModelFormats"])


@pytest.mark.parametrize("name", ISVC_OVERLAYS)
def test_canary_percent_only_in_knative_mode(name: str, render: Render) -> None:
    # Only KServe's Knative reconciler reads canaryTrafficPercent
    # (reconcilers/knative/ksvc_reconciler.go): elsewhere it silently does nothing.
    isvc, _ = _overlay(render, name)
    if "canaryTrafficPercent" in isvc["spec"]["predictor"]:
        assert mode(isvc) == "Knative", f"{name}: canaryTrafficPercent is ignored in Standard mode"


def test_gpu_overlay_runs_the_gpu_image_when_images_are_pinned_by_digest(
        tmp_path: Path, render: Render) -> None:
    # Issue 19, finding 8: KServe ignores runtimeVersion for an image pinned by digest
    # (v0.20.0 UpdateImageTag), so a digest-pinned CPU runtime put the CPU image on
    # the GPU node. Production pins by digest: one overlay per thing deployed.
    cpu, gpu = "sha256:" + "c" * 64, "sha256:" + "9" * 64

    def pinned(name: str, target: Path, digest: str) -> list[dict[str, Any]]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n  - {os.path.relpath(target, folder)}\n"
            f"images:\n  - name: kserve-detector\n    digest: {digest}\n")
        return render(folder)

    cluster = of_kind(pinned("runtime", MANIFESTS / "runtime", cpu), "ClusterServingRuntime")
    objects = pinned("model-gpu", OVERLAYS_DIR / "model-gpu", gpu)
    isvc = only_isvc(objects)
    c = predictor_container(isvc, of_kind(objects, "ServingRuntime") + cluster)
    assert c["image"] == f"kserve-detector@{gpu}", f"the GPU InferenceService runs {c['image']}"
    assert "runtimeVersion" not in isvc["spec"]["predictor"]["model"]



@pytest.mark.parametrize("name", ISVC_OVERLAYS)
def test_only_the_kind_overlays_ask_for_the_demo(name: str, render: Render,
                                                 cluster_runtime: dict[str, Any]) -> None:
    # Issue 19, finding 5: an empty model folder stops the server unless --demo_if_empty
    # asks for the demo. kind has no object store, so its overlays ask; nothing meant
    # for a real cluster may (a wrong storageUri would hide behind a green probe).
    isvc, own = _overlay(render, name)
    args = predictor_container(isvc, own + [cluster_runtime])["args"]
    assert ("--demo_if_empty" in args) == name.startswith("kind"), args
