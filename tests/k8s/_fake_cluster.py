"""The fake cluster behind the fake kubectl (_fake_kubectl.py): its state, and the
refusals of the real kubectl and API server where the kind script's bugs lived. The
state lives in ``$FAKE_CALLS.state.json``, so successive commands see one cluster.

- An object whose kind no Established CRD serves is refused: kubectl resolves every
  object's kind from discovery when it starts, so a CRD applied in the same invocation
  (or just before, with no wait in between) does not help: "resource mapping not found
  ... ensure CRDs are installed first". A CRD counts as Established once any ``kubectl
  wait`` has returned after the invocation that created it (the script has given the
  API server time); ``wait --for=condition=Established`` is the upstream way (KServe
  v0.20.0 hack/setup/common.sh, wait_for_crd).
- A namespaced object in a namespace that does not exist: NotFound.
- A KServe object with a field its schema lacks (strict field validation), and what
  KServe's validating webhooks refuse (_fake_admission.py).
- A request that a validating webhook (failurePolicy Fail) covers, while the
  Deployment serving that webhook is not Available: "failed calling webhook ... no
  endpoints available" (knative/serving#13665 for config-network). A webhook
  configuration covers requests from later invocations only: Knative ships its
  ConfigMap webhook without rules, and its pod fills them in when it starts. A
  Deployment is Available once ``kubectl wait --for=condition=Available`` named it (or
  ``--all`` in its namespace).
- A change of ``serving.kserve.io/deploymentMode`` on an existing InferenceService
  (KServe v0.20.0 pkg/apis/serving/v1beta1/inference_service_validation.go,
  validateDeploymentMode).

And what KServe then does with a Knative-mode InferenceService, which the canary
needs: each change of the predictor (other than the traffic split) is a new revision;
``wait --for=condition=Ready`` makes the newest one the rolled-out one once it gets
100 % (PropagateStatus in pkg/apis/serving/v1beta1/inference_service_status.go); the
split follows pkg/controller/v1beta1/inferenceservice/reconcilers/knative/
ksvc_reconciler.go (canaryTrafficPercent splits only when a rolled-out revision
exists, else 100 % goes to the newest).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _releases

BUILT_IN_CLUSTER = {"Namespace", "CustomResourceDefinition", "ClusterRole",
                    "ClusterRoleBinding", "ValidatingWebhookConfiguration",
                    "MutatingWebhookConfiguration", "APIService", "PriorityClass",
                    "StorageClass", "PersistentVolume"}
BUILT_IN = BUILT_IN_CLUSTER | {"Deployment", "Service", "ConfigMap", "Secret",
                               "ServiceAccount", "Role", "RoleBinding", "DaemonSet",
                               "StatefulSet", "Pod", "HorizontalPodAutoscaler",
                               "PodDisruptionBudget", "NetworkPolicy", "Job"}
FRESH_NAMESPACES = ["default", "kube-system", "kube-public", "kube-node-lease",
                    "local-path-storage"]
MODE = "serving.kserve.io/deploymentMode"


class Refused(Exception):
    """What kubectl prints on stderr before exiting 1."""



# --- state and rules ------------------------------------------------------------

def state_path() -> Path:
    return Path(os.environ["FAKE_CALLS"] + ".state.json")


def load_state() -> dict[str, Any]:
    path = state_path()
    if path.exists():
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    else:
        state = {"namespaces": list(FRESH_NAMESPACES), "crds": {}, "objects": {},
                 "webhooks": [], "seq": 0, "last_wait": -1}
    state["seq"] += 1
    return state


def save_state(state: dict[str, Any]) -> None:
    state_path().write_text(json.dumps(state, indent=1, sort_keys=True))


def key(kind: str, namespace: str | None, name: str) -> str:
    return f"{kind}/{namespace or ''}/{name}"


# --- arguments -------------------------------------------------------------------------

def from_manifest(doc: dict[str, Any]) -> dict[str, Any]:
    """A rendered object in the fake's form."""
    api = str(doc.get("apiVersion", "v1"))
    group = api.split("/", 1)[0] if "/" in api else ""
    meta = doc.get("metadata", {})
    out: dict[str, Any] = {"kind": doc["kind"], "group": group, "name": meta.get("name", ""),
                           "namespace": meta.get("namespace"),
                           "labels": meta.get("labels", {}) or {},
                           "annotations": meta.get("annotations", {}) or {}}
    if doc["kind"] == "CustomResourceDefinition":
        names = doc["spec"]["names"]
        out["defines"] = {"group": doc["spec"]["group"], "kind": names["kind"],
                          "scope": doc["spec"].get("scope", "Namespaced")}
    if "spec" in doc:
        out["spec"] = doc["spec"]
    for field in ("data", "stringData", "secrets"):
        if field in doc:
            out[field] = doc[field]
    return out


def read_objects(options: dict[str, str]) -> list[dict[str, Any]]:
    import yaml

    if "-k" in options:
        real = os.environ.get("FAKE_REAL_KUBECTL")
        if not real:
            return []
        proc = subprocess.run([real, "kustomize", options["-k"]], capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise Refused(proc.stderr.strip())
        docs = list(yaml.safe_load_all(proc.stdout))
    elif options.get("-f") == "-":
        docs = list(yaml.safe_load_all(sys.stdin.read()))
    elif "-f" in options:
        source = options["-f"]
        found = _releases.release(source)
        if found is not None:
            return [dict(o) for o in found]
        if "://" in source:
            return []  # a release this fake does not model: accepted as is
        docs = list(yaml.safe_load_all(Path(source).read_text(encoding="utf-8")))
    else:
        raise Refused("error: must specify one of -f and -k")
    return [from_manifest(d) for d in docs if d]


# --- the rules -------------------------------------------------------------------------

def served_kinds(state: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(group, kind) -> CRD, for the CRDs Established as this invocation started."""
    return {(c["group"], c["kind"]): c for c in state["crds"].values()
            if c["created"] < state["seq"] and c["created"] < state["last_wait"]}


def check_kind(state: dict[str, Any], o: dict[str, Any]) -> str:
    """The object's scope; refuses a kind nobody serves."""
    if o["group"] in {"", "apps", "rbac.authorization.k8s.io", "apiextensions.k8s.io",
                      "admissionregistration.k8s.io", "apiregistration.k8s.io",
                      "autoscaling", "policy", "networking.k8s.io", "batch"}:
        return "Cluster" if o["kind"] in BUILT_IN_CLUSTER else "Namespaced"
    crd = served_kinds(state).get((o["group"], o["kind"]))
    if crd is None:
        raise Refused(f'error: resource mapping not found for name: "{o["name"]}" namespace: '
                      f'"{o.get("namespace") or ""}" from "": no matches for kind '
                      f'"{o["kind"]}" in version "{o["group"]}/..."\n'
                      "ensure CRDs are installed first")
    return str(crd["scope"])


def webhook_refusal(state: dict[str, Any], o: dict[str, Any]) -> str | None:
    """Why a Fail webhook refuses this request now, or None."""
    for hook in state["webhooks"]:
        if hook["created"] >= state["seq"]:
            continue
        w = hook["webhook"]
        covered = any(g == o["group"] and k in {o["kind"], "*"} for g, k in w["rules"])
        if not covered:
            continue
        if w["namespace"] and o.get("namespace") != w["namespace"]:
            continue
        labels = o.get("labels", {})
        if any(labels.get(k) not in v for k, v in w["selector"].items()):
            continue
        ns, deployment = w["deployment"]
        if not state["objects"].get(key("Deployment", ns, deployment), {}).get("available"):
            return (f'Error from server (InternalError): Internal error occurred: failed '
                    f'calling webhook "{w["name"]}": failed to call webhook: Post '
                    f'"https://{w["service"]}.{ns}.svc:443/validate": no endpoints '
                    f'available for service "{w["service"]}"')
        if not ca_injected(state, w):
            return (f'Error from server (InternalError): Internal error occurred: failed '
                    f'calling webhook "{w["name"]}": failed to call webhook: Post '
                    f'"https://{w["service"]}.{ns}.svc:443/validate?timeout=30s": tls: '
                    "failed to verify certificate: x509: certificate signed by unknown "
                    "authority")
    return None


def ca_injected(state: dict[str, Any], w: dict[str, Any]) -> bool:
    """Whether the CA injector has filled this webhook's caBundle: FAKE_CA_INJECT_SECONDS
    (default 0) after its Deployment became Available. Until then the API server cannot
    verify the webhook's certificate (cert-manager v1.17.0: cainjector injects
    cert-manager-webhook's own CA into its webhook configurations)."""
    injector = w.get("ca_injector")
    if not injector:
        return True
    deployment = state["objects"].get(key("Deployment", *injector), {})
    if not deployment.get("available"):
        return False
    delay = float(os.environ.get("FAKE_CA_INJECT_SECONDS", "0"))
    return bool(time.time() >= deployment.get("available_at", 0) + delay)


def admit(state: dict[str, Any], o: dict[str, Any], default_ns: str | None) -> str:
    """What the API server checks before storing an object (a server-side dry run stops
    here); returns kubectl's ``kind/name``."""
    scope = check_kind(state, o)
    ns = None
    if scope == "Namespaced":
        ns = o.get("namespace") or default_ns or "default"
        if ns not in state["namespaces"]:
            raise Refused(f'Error from server (NotFound): error when creating "STDIN": '
                          f'namespaces "{ns}" not found')
    o["namespace"] = ns
    why = webhook_refusal(state, o) or kserve_validation(state, o)
    if why:
        raise Refused(why)
    return f"{o['kind'].lower()}.{o['group']}/{o['name']}".replace("./", "/")


API_VERSIONS = {"InferenceService": "v1beta1", "ServingRuntime": "v1alpha1",
                "ClusterServingRuntime": "v1alpha1"}


def _unknown_fields(doc: dict[str, Any]) -> list[str]:
    """_models.validate's unknown-field errors, cached on disk across runs: importing the
    kserve package costs a second or more in every fake kubectl that applies an object,
    and the tests apply the same few objects many times."""
    import hashlib
    import tempfile

    models = Path(__file__).with_name("_models.py")
    digest = hashlib.sha256(models.read_bytes() + json.dumps(doc, sort_keys=True).encode())
    folder = Path(os.environ.get("FAKE_STRICT_CACHE",
                                 Path(tempfile.gettempdir()) / "kserve-detector-fake-strict"))
    cached = folder / f"{digest.hexdigest()}.json"
    if cached.exists():
        found: list[str] = json.loads(cached.read_text(encoding="utf-8"))
        return found
    try:
        from _models import validate

        found = [e for e in validate(doc) if "unknown field" in e]
    except ImportError:
        return []  # no kserve package: no schema to hold the object to
    folder.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(found))
    return found


def strict_field_refusal(o: dict[str, Any]) -> str | None:
    """Unknown fields in a KServe object. kubectl's default --validate=strict asks the API
    server for strict field validation (fieldValidation=Strict, GA in Kubernetes 1.27;
    kubernetes/kubernetes staging/src/k8s.io/kubectl/pkg/cmd/util/helpers.go,
    GetValidationDirective), client-side and --server-side apply alike: the server
    refuses a field the CRD's schema does not declare instead of dropping it. The schema
    here is the kserve package's API models (_models.py), when installed."""
    version = API_VERSIONS.get(o["kind"])
    if version is None or "spec" not in o:
        return None
    doc = {"apiVersion": f"{o['group']}/{version}", "kind": o["kind"],
           "metadata": {"name": o["name"]}, "spec": o["spec"]}
    unknown = _unknown_fields(doc)
    if not unknown:
        return None
    import re

    paths = [re.sub(r"/(\d+)", r"[\1]", e.split(":", 1)[0]).replace("/", ".").lstrip(".")
             for e in unknown]
    fields = ", ".join(f'unknown field "{p}"' for p in paths)
    return (f'Error from server (BadRequest): error when creating "STDIN": {o["kind"]} in '
            f'version "{version}" cannot be handled as a {o["kind"]}: strict decoding '
            f"error: {fields}")


def kserve_validation(state: dict[str, Any], o: dict[str, Any]) -> str | None:
    """What the API server (strict fields) and KServe's validating webhooks
    (_fake_admission.py, once installed) refuse."""
    import _fake_admission

    strict = strict_field_refusal(o)
    if strict:
        return strict
    installed = {h["webhook"]["name"] for h in state["webhooks"] if h["created"] < state["seq"]}
    why: str | None = None
    if o["kind"] == "InferenceService" and _fake_admission.ISVC_WEBHOOK in installed:
        why = _fake_admission.isvc_refusal(o)
    elif (o["kind"] in {"ServingRuntime", "ClusterServingRuntime"}
            and f"{o['kind'].lower()}.kserve-webhook-server.validator" in installed):
        why = _fake_admission.runtime_refusal(state, o)
    return why


def store(state: dict[str, Any], o: dict[str, Any], default_ns: str | None) -> str:
    """Creates or updates one object; returns kubectl's line for it."""
    o = dict(o)
    admit(state, o, default_ns)
    ns = o["namespace"]
    k = key(o["kind"], ns, o["name"])
    old = state["objects"].get(k)
    if o["kind"] == "InferenceService":
        o = inference_service(state, o, old)
    if old is not None:
        o = {**old, **{f: v for f, v in o.items() if f != "created"}}
    else:
        o["created"] = state["seq"]
    state["objects"][k] = o
    if o["kind"] == "Namespace" and o["name"] not in state["namespaces"]:
        state["namespaces"].append(o["name"])
    if o["kind"] == "CustomResourceDefinition" and o["name"] not in state["crds"]:
        state["crds"][o["name"]] = {**o["defines"], "labels": o.get("labels", {}),
                                    "created": state["seq"]}
    if o["kind"] == "ValidatingWebhookConfiguration" and "webhook" in o and old is None:
        state["webhooks"].append({"webhook": o["webhook"], "created": state["seq"]})
    verb = "configured" if old is not None else "created"
    return f"{o['kind'].lower()}/{o['name']} {verb}"


def inference_service(state: dict[str, Any], new: dict[str, Any],
                      old: dict[str, Any] | None) -> dict[str, Any]:
    """KServe's webhook and controller, as far as the deployment mode and revisions go."""
    wanted = new.get("annotations", {}).get(MODE)
    if old is not None:
        recorded = old["status"]["deploymentMode"]
        if wanted is not None and wanted != recorded:
            raise Refused('Error from server (Forbidden): error when applying patch: admission '
                          'webhook "inferenceservice.kserve-webhook-server.validator" denied '
                          "the request: update rejected: deploymentMode cannot be changed "
                          f"from '{recorded}' to '{wanted}'")
        status = dict(old["status"])
        # The traffic split is not part of a revision: changing it makes none.
        def template(isvc: dict[str, Any]) -> dict[str, Any]:
            predictor = dict(isvc.get("spec", {}).get("predictor", {}))
            predictor.pop("canaryTrafficPercent", None)
            return predictor

        if template(new) != template(old):
            status["revisions"] = [*status["revisions"],
                                   f"{new['name']}-predictor-{len(status['revisions']) + 1:05d}"]
        return {**new, "status": status}
    if wanted is None:
        config = state["objects"].get(key("ConfigMap", "kserve", "inferenceservice-config"), {})
        deploy = json.loads(config.get("data", {}).get("deploy", "{}") or "{}")
        wanted = deploy.get("defaultDeploymentMode", "Serverless")
    mode = "Knative" if wanted in {"Serverless", "Knative"} else "Standard"
    return {**new, "status": {"deploymentMode": mode, "rolledOut": "",
                              "revisions": [f"{new['name']}-predictor-00001"]}}


def traffic(isvc: dict[str, Any]) -> list[dict[str, Any]]:
    """status.components.predictor.traffic, as the Knative reconciler routes it."""
    status = isvc["status"]
    percent = isvc.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent")
    latest = status["revisions"][-1]
    if percent is not None and status["rolledOut"]:
        out = [{"tag": "latest", "revisionName": latest, "latestRevision": True,
                "percent": percent}]
        if percent < 100:
            out.append({"tag": "prev", "revisionName": status["rolledOut"],
                        "latestRevision": False, "percent": 100 - percent})
        return out
    return [{"revisionName": latest, "latestRevision": True, "percent": 100}]


# --- commands --------------------------------------------------------------------------

def ready(state: dict[str, Any], isvc: dict[str, Any]) -> None:
    """The InferenceService becomes Ready: the newest revision counts as rolled out once
    it gets 100 % (KServe v0.20.0, PropagateStatus in pkg/apis/serving/v1beta1/
    inference_service_status.go), which a canary over a rolled-out revision holds off."""
    status = isvc["status"]
    knative = "services.serving.knative.dev" in state["crds"]
    if status["deploymentMode"] == "Knative" and not knative:
        raise Refused("error: timed out waiting for the condition on inferenceservices/"
                      f"{isvc['name']} (Knative mode, and Knative Serving is not installed)")
    percent = isvc.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent")
    if not status["rolledOut"] or percent is None or percent >= 100:
        status["rolledOut"] = status["revisions"][-1]


def merge(base: Any, patch: Any) -> Any:
    """A JSON merge patch (RFC 7386)."""
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return patch
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(base.get(k), v)
    return out
