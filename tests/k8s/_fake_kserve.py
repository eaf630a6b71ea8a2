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

from typing import Any

from _fake_cluster import key, served_kinds

__all__ = ["delete", "manifest", "owned_by", "reconcile", "served_kinds"]

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
