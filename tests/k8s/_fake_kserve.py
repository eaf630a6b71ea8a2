"""What happens in the fake cluster (_fake_cluster.py) after an InferenceService is
admitted: KServe's controller making the predictor's autoscaler, and KEDA's admission
webhook judging the ScaledObject it makes. A failure is kept on the InferenceService
(``status.controllerError``) and keeps it from getting Ready, as on a real cluster,
where the controller logs it and retries.

Read from the sources:

- KServe v0.20.0, pkg/controller/v1beta1/inferenceservice/reconcilers/autoscaler/
  autoscaler_reconciler.go: the class annotation picks ONE reconciler: "hpa" (the
  default), "external" and "none" the HPA one, "keda" the KEDA one. Nothing deletes what
  the other class made: switching hpa -> keda leaves KServe's HPA behind, keda -> hpa
  leaves the ScaledObject.
- reconcilers/hpa/hpa_reconciler.go: the HPA is named after the predictor
  (``<isvc>-predictor``), targets the Deployment of that name, is owned by the
  InferenceService (SetControllerReferences); created for class hpa (shouldCreateHPA),
  deleted for external / none (shouldDeleteHPA).
- reconcilers/keda/keda_reconciler.go: the ScaledObject ``<isvc>-predictor``, owned by
  the InferenceService, one trigger per External metric. Without KEDA's CRD the create
  fails ("no matches for kind").
- kedacore/keda v2.18.3, apis/keda/v1alpha1/scaledobject_webhook.go (verifyHpas, webhook
  vscaledobject.kb.io): a ScaledObject is refused while another HPA, not owned by it and
  not annotated validations.keda.sh/hpa-ownership: "false", targets the same workload.
  The webhook's failurePolicy is Ignore (config/webhooks/validation_webhooks.yaml): it
  judges only while keda-admission-webhooks serves. KEDA's own HPA is
  ``keda-hpa-<scaledobject>`` (controllers/keda/hpa.go, getHPAName), owned by the
  ScaledObject.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from _fake_cluster import key, served_kinds

__all__ = ["delete", "deployment_problem", "manifest", "owned_by", "pod_problem", "reconcile",
           "served_kinds"]

AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
HPA_OWNERSHIP = "validations.keda.sh/hpa-ownership"
HPA = "HorizontalPodAutoscaler"


def _autoscaler(kind: str, group: str, ns: str, name: str, owner: tuple[str, str],
                spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "group": group, "name": name, "namespace": ns, "labels": {},
            "annotations": {}, "owner": list(owner), "spec": spec}


def _target(deployment: str) -> dict[str, Any]:
    return {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": deployment}}


def owned_by(o: dict[str, Any], kind: str, name: str) -> bool:
    """Whether ``o`` carries an owner reference to that object."""
    return o.get("owner") == [kind, name]


def reconcile(state: dict[str, Any], isvc: dict[str, Any]) -> None:
    """One pass of KServe's autoscaler reconciler for a Standard-mode InferenceService."""
    status = isvc.setdefault("status", {})
    status.pop("controllerError", None)
    if status.get("deploymentMode") != "Standard":
        return
    ns, name = isvc["namespace"], isvc["name"]
    predictor = f"{name}-predictor"
    klass = isvc.get("annotations", {}).get(AUTOSCALER_CLASS, "hpa")
    hpa_key = key(HPA, ns, predictor)
    hpa = state["objects"].get(hpa_key)
    if klass == "hpa":
        if hpa is None:
            state["objects"][hpa_key] = _autoscaler(
                HPA, "autoscaling", ns, predictor, ("InferenceService", name),
                _target(predictor))
    elif klass in {"external", "none"}:
        if hpa is not None and owned_by(hpa, "InferenceService", name):
            del state["objects"][hpa_key]
    elif klass == "keda":
        error = _scaled_object(state, isvc, ns, predictor)
        if error:
            status["controllerError"] = error


def _scaled_object(state: dict[str, Any], isvc: dict[str, Any], ns: str,
                   predictor: str) -> str | None:
    """Creates the ScaledObject (and KEDA's HPA), or says why it cannot be."""
    if ("keda.sh", "ScaledObject") not in served_kinds(state):
        return (f'failed to create ScaledObject {ns}/{predictor}: no matches for kind '
                '"ScaledObject" in version "keda.sh/v1alpha1" (is KEDA installed?)')
    so_key = key("ScaledObject", ns, predictor)
    webhook = state["objects"].get(key("Deployment", "keda", "keda-admission-webhooks"), {})
    if webhook.get("available"):
        for o in state["objects"].values():
            if (o["kind"] == HPA and o["namespace"] == ns
                    and o.get("spec", {}).get("scaleTargetRef", {}).get("name") == predictor
                    and not owned_by(o, "ScaledObject", predictor)
                    and o.get("annotations", {}).get(HPA_OWNERSHIP) != "false"):
                return ('admission webhook "vscaledobject.kb.io" denied the request: the '
                        f"workload '{predictor}' of type 'apps/v1.Deployment' is already "
                        f"managed by the hpa '{o['name']}'")
    metrics = isvc.get("spec", {}).get("predictor", {}).get("autoScaling", {}).get(
        "metrics", [])
    triggers = [{"type": m["external"]["metric"]["backend"],
                 "metadata": {"serverAddress": m["external"]["metric"].get("serverAddress"),
                              "query": m["external"]["metric"]["query"],
                              "threshold": str(m["external"]["target"].get("value"))}}
                for m in metrics if m.get("type") == "External"]
    state["objects"][so_key] = _autoscaler(
        "ScaledObject", "keda.sh", ns, predictor, ("InferenceService", isvc["name"]),
        {**_target(predictor), "triggers": triggers})
    keda_hpa = f"keda-hpa-{predictor}"
    state["objects"][key(HPA, ns, keda_hpa)] = _autoscaler(
        HPA, "autoscaling", ns, keda_hpa, ("ScaledObject", predictor), _target(predictor))
    return None


def delete(state: dict[str, Any], k: str) -> None:
    """Deletes an object and, as the garbage collector does, what it owns."""
    o = state["objects"].pop(k)
    for other_key, other in list(state["objects"].items()):
        if other.get("namespace") == o.get("namespace") and owned_by(other, o["kind"],
                                                                      o["name"]):
            delete(state, other_key)


def manifest(o: dict[str, Any]) -> dict[str, Any]:
    """A stored object as the API server shows it (for ``get -o jsonpath``)."""
    meta: dict[str, Any] = {"name": o["name"], "namespace": o.get("namespace"),
                            "labels": o.get("labels", {}),
                            "annotations": o.get("annotations", {})}
    if o.get("owner"):
        meta["ownerReferences"] = [{"kind": o["owner"][0], "name": o["owner"][1]}]
    return {"kind": o["kind"], "metadata": meta, "spec": o.get("spec", {}),
            "status": o.get("status", {})}


# --- the predictor pod ------------------------------------------------------------------
# Whether the pod KServe asks for would ever run, checked in the order a cluster meets
# the problems: the ReplicaSet creating the pod, KServe's pod webhook, the scheduler,
# the kubelet pulling the image, the container starting.

def node_images() -> set[str]:
    """Images on the kind node: what the fake `kind load image-archive` loaded."""
    path = Path(os.environ["FAKE_CALLS"] + ".images")
    return set(path.read_text(encoding="utf-8").split()) if path.exists() else set()


def _image_problem(c: dict[str, Any]) -> str | None:
    """Why the kubelet cannot start this container's image on the kind node, or None."""
    image, policy = c["image"], c.get("imagePullPolicy", "IfNotPresent")
    if image in node_images():
        return None
    if policy == "Never":
        return (f'ErrImageNeverPull: container image "{image}" is not present with pull '
                "policy of Never (was it loaded with kind load?)")
    if image not in os.environ.get("FAKE_REGISTRY_IMAGES", "").split():
        return f'ImagePullBackOff: failed to pull image "{image}": not found'
    return None


def deployment_problem(deployment: dict[str, Any]) -> str | None:
    """Why a Deployment applied by hand (the web app) never rolls out: its images."""
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get(
        "containers", [])
    return next((p for p in map(_image_problem, containers) if p), None)


def _container(state: dict[str, Any], isvc: dict[str, Any]) -> dict[str, Any]:
    """The predictor container KServe builds (runtime merged, as _kserve.py reads v0.20.0)."""
    from _kserve import predictor_container

    runtimes = [manifest(o) for o in state["objects"].values()
                if "spec" in o and ((o["kind"] == "ServingRuntime"
                                     and o["namespace"] == isvc["namespace"])
                                    or o["kind"] == "ClusterServingRuntime")]
    try:
        container: dict[str, Any] = predictor_container(manifest(isvc), runtimes)
    except (AssertionError, StopIteration) as exc:
        # KServe v0.20.0 pkg/apis/serving/v1beta1/predictor_model.go: no supporting runtime.
        raise _PodProblem(f"No runtime found to support specified predictor ({exc})") from exc
    return container


class _PodProblem(Exception):
    """Why the predictor pod never becomes ready."""


def pod_problem(state: dict[str, Any], isvc: dict[str, Any]) -> str | None:
    """Why the InferenceService's predictor pod would never get ready, or None."""
    try:
        _check_pod(state, isvc)
    except _PodProblem as exc:
        return str(exc)
    return None


def _check_pod(state: dict[str, Any], isvc: dict[str, Any]) -> None:
    ns = isvc["namespace"]
    predictor = isvc.get("spec", {}).get("predictor", {})
    c = _container(state, isvc)
    account = predictor.get("serviceAccountName")
    # kubernetes plugin/pkg/admission/serviceaccount/admission.go: a pod naming a missing
    # ServiceAccount is refused; the ReplicaSet reports FailedCreate and retries.
    sa = state["objects"].get(key("ServiceAccount", ns, account)) if account else {}
    if sa is None:
        raise _PodProblem(f'ReplicaSet FailedCreate: pods "{isvc["name"]}-predictor-..." is '
                          f"forbidden: error looking up service account {ns}/{account}: "
                          f'serviceaccount "{account}" not found')
    storage = predictor.get("model", {}).get("storageUri") or next(
        (e.get("value") for e in c.get("env", []) if e["name"] == "STORAGE_URI"), None)
    # KServe's pod webhook mounts the Secrets the account lists into the storage
    # initializer (v0.20.0 pkg/credentials/service_account_credentials.go,
    # mountSecretCredential): a missing one fails the webhook, so no pod is created.
    for ref in (sa or {}).get("secrets", []) if storage else []:
        if key("Secret", ns, ref["name"]) not in state["objects"]:
            raise _PodProblem(
                'ReplicaSet FailedCreate: admission webhook "inferenceservice.kserve-'
                'webhook-server.pod-mutator" denied the request: secrets '
                f'"{ref["name"]}" not found')
    gpus = int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
    if gpus > int(os.environ.get("FAKE_NODE_GPUS", "0")):
        raise _PodProblem("Pending: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu")
    pull = _image_problem(c)
    if pull:
        raise _PodProblem(pull)
    # predictor/__main__.py: an empty /mnt/models stops the server with exit code 2
    # unless --demo_if_empty asks for the embedded demo.
    if not storage and "--demo_if_empty" not in c.get("args", []):
        raise _PodProblem("CrashLoopBackOff: kserve-container exited with code 2 (cannot "
                          "load the model: /mnt/models is empty; pass --demo_if_empty to "
                          "serve the embedded demo detector)")
