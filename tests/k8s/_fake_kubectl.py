"""A stand-in for ``kubectl`` against a kind cluster, with the refusals of the real one
where the kind script's bugs lived. Run as a program by the ``kubectl`` on the test's
PATH (see _fakes.py); the cluster's state lives in ``$FAKE_CALLS.state.json``.

What it refuses, as the API server and kubectl do:

- an object whose kind no Established CRD serves: kubectl resolves every object's kind
  from discovery when it starts, so a CRD applied in the same invocation (or just
  before, with no wait in between) does not help: "resource mapping not found ...
  ensure CRDs are installed first". A CRD counts as Established once any ``kubectl
  wait`` has returned after the invocation that created it (the script has given the
  API server time); ``wait --for=condition=Established`` is the upstream way
  (KServe v0.20.0 hack/setup/common.sh, wait_for_crd).
- a namespaced object in a namespace that does not exist (NotFound);
- ``create namespace`` for one that exists (AlreadyExists);
- a request a validating webhook (failurePolicy Fail) covers while the Deployment
  serving that webhook is not Available: "failed calling webhook ... no endpoints
  available" (knative/serving#13665 for config-network). A webhook configuration
  covers requests from later invocations only: Knative ships its ConfigMap webhook
  without rules and its pod fills them in when it starts. A Deployment is Available
  once ``kubectl wait --for=condition=Available`` named it (or ``--all`` in its
  namespace);
- a change of ``serving.kserve.io/deploymentMode`` on an existing InferenceService
  (KServe v0.20.0 pkg/apis/serving/v1beta1/inference_service_validation.go,
  validateDeploymentMode).

And what KServe then does with a Knative-mode InferenceService that the canary needs:
each change of the predictor is a new revision; ``wait --for=condition=Ready`` makes
the newest one the rolled-out one unless a canary holds traffic on the previous; the
traffic split follows pkg/controller/v1beta1/inferenceservice/reconcilers/knative/
ksvc_reconciler.go (canaryTrafficPercent splits only when a rolled-out revision
exists, else 100 % goes to the newest).

The knobs of the earlier shell fake stay: FAKE_FAIL / FAKE_FAIL_TIMES (fail calls
containing a string), FAKE_MINOR (server version), FAKE_SERVICE_PORTS (the predictor
Service's ports), and ``port-forward`` really listens on its local port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _releases  # noqa: E402

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


# --- state -----------------------------------------------------------------------------

def state_path() -> Path:
    return Path(os.environ["FAKE_CALLS"] + ".state.json")


def load_state() -> dict[str, Any]:
    path = state_path()
    if path.exists():
        state: dict[str, Any] = json.loads(path.read_text())
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

def parse(argv: list[str]) -> tuple[list[str], dict[str, str], set[str]]:
    """Positional words, valued options and bare flags of a kubectl command line."""
    valued = {"--context", "-n", "--namespace", "-f", "--filename", "-k", "--kustomize",
              "-o", "--output", "-p", "--patch", "--type", "--for", "--timeout", "-l",
              "--selector", "--field-selector", "--address", "--tail", "--sort-by"}
    words: list[str] = []
    options: dict[str, str] = {}
    flags: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and "=" in arg and arg.split("=", 1)[0] in valued:
            name, value = arg.split("=", 1)
            options[name] = value
        elif arg in valued and i + 1 < len(argv):
            options[arg] = argv[i + 1]
            i += 1
        elif arg.startswith("-"):
            flags.add(arg.split("=", 1)[0])
        else:
            words.append(arg)
        i += 1
    for long, short in (("--namespace", "-n"), ("--filename", "-f"), ("--kustomize", "-k"),
                        ("--output", "-o"), ("--patch", "-p"), ("--selector", "-l")):
        if long in options:
            options[short] = options.pop(long)
    return words, options, flags


# --- objects from files, kustomizations and stdin --------------------------------------

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
    if "data" in doc:
        out["data"] = doc["data"]
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
        docs = list(yaml.safe_load_all(Path(source).read_text()))
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
    return None


def store(state: dict[str, Any], o: dict[str, Any], default_ns: str | None) -> str:
    """Creates or updates one object; returns kubectl's line for it."""
    scope = check_kind(state, o)
    ns = None
    if scope == "Namespaced":
        ns = o.get("namespace") or default_ns or "default"
        if ns not in state["namespaces"]:
            raise Refused(f'Error from server (NotFound): error when creating "STDIN": '
                          f'namespaces "{ns}" not found')
    o = {**o, "namespace": ns}
    why = webhook_refusal(state, o)
    if why:
        raise Refused(why)
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

def cmd_apply(state: dict[str, Any], options: dict[str, str]) -> int:
    failures = []
    for o in read_objects(options):
        try:
            print(store(state, o, options.get("-n")))
        except Refused as exc:
            failures.append(str(exc))
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


def cmd_create(state: dict[str, Any], words: list[str]) -> int:
    if words[1:2] != ["namespace"]:
        return 0
    name = words[2]
    if name in state["namespaces"]:
        raise Refused(f'Error from server (AlreadyExists): namespaces "{name}" already exists')
    state["namespaces"].append(name)
    print(f"namespace/{name} created")
    return 0


def _targets(state: dict[str, Any], words: list[str], options: dict[str, str],
             flags: set[str]) -> list[tuple[str, str]]:
    """(kind, state key or CRD name) for what a wait/get names."""
    ns = options.get("-n", "default")
    aliases = {"deployment": "Deployment", "deploy": "Deployment", "crd": "crd",
               "customresourcedefinition": "crd", "inferenceservice": "InferenceService",
               "isvc": "InferenceService", "configmap": "ConfigMap",
               "scaledobject": "ScaledObject"}
    resource = words[1] if len(words) > 1 else ""
    if "/" in resource:
        kind, name = resource.split("/", 1)
        names = [name]
    else:
        kind = resource
        names = words[2:]
    kind = aliases.get(kind.lower(), kind)
    if kind == "crd":
        if "--all" in flags or "-l" in options:
            wanted = dict(p.split("=", 1) for p in options.get("-l", "").split(",") if p)
            found = [n for n, c in state["crds"].items()
                     if all(c["labels"].get(k) == v for k, v in wanted.items())]
            return [("crd", n) for n in found]
        return [("crd", n) for n in names]
    if "--all" in flags:
        return [(kind, k) for k, o in state["objects"].items()
                if o["kind"] == kind and o["namespace"] == ns]
    return [(kind, key(kind, ns, n)) for n in names]


def cmd_wait(state: dict[str, Any], words: list[str], options: dict[str, str],
             flags: set[str]) -> int:
    condition = options.get("--for", "")
    targets = _targets(state, words, options, flags)
    if not targets:
        raise Refused("error: no matching resources found")
    for kind, k in targets:
        if kind == "crd":
            if k not in state["crds"]:
                raise Refused(f'Error from server (NotFound): customresourcedefinitions'
                              f'.apiextensions.k8s.io "{k}" not found')
            continue
        o = state["objects"].get(k)
        if o is None:
            raise Refused(f'Error from server (NotFound): {kind.lower()}s '
                          f'"{k.rsplit("/", 1)[-1]}" not found')
        if condition == "condition=Available" and kind == "Deployment":
            o["available"] = True
        if condition == "condition=Ready" and kind == "InferenceService":
            ready(state, o)
    state["last_wait"] = state["seq"]
    for _, k in targets:
        print(f"{k} condition met")
    return 0


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


def cmd_rollout(state: dict[str, Any], words: list[str], options: dict[str, str]) -> int:
    if words[1:2] == ["status"]:
        kind_name = words[2]
        k = key("Deployment", options.get("-n", "default"), kind_name.split("/", 1)[1])
        if k not in state["objects"]:
            raise Refused(f'Error from server (NotFound): deployments "{kind_name}" not found')
        state["objects"][k]["available"] = True
        print(f'deployment "{kind_name}" successfully rolled out')
    return 0


def cmd_patch(state: dict[str, Any], words: list[str], options: dict[str, str]) -> int:
    targets = _targets(state, words, options, set())
    (kind, k), = targets
    o = state["objects"].get(k)
    if o is None:
        raise Refused(f'Error from server (NotFound): {kind.lower()}s '
                      f'"{k.rsplit("/", 1)[-1]}" not found')
    why = webhook_refusal(state, o)
    if why:
        raise Refused(why)
    patch = json.loads(options.get("-p", "{}"))
    merged = merge(o, patch)
    if kind == "InferenceService":
        merged = inference_service(state, merged, o)
    state["objects"][k] = merged
    print(f"{kind.lower()}/{o['name']} patched")
    return 0


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


def cmd_get(state: dict[str, Any], words: list[str], options: dict[str, str],
            argv: list[str]) -> int:
    line = " ".join(argv)
    if "--raw" in argv and "/version" in argv:
        minor = os.environ.get("FAKE_MINOR", "34")
        print(json.dumps({"major": "1", "minor": minor}, indent=2))
        return 0
    resource = words[1] if len(words) > 1 else ""
    if resource in {"namespace", "namespaces", "ns"} and len(words) > 2:
        if words[2] not in state["namespaces"]:
            raise Refused(f'Error from server (NotFound): namespaces "{words[2]}" not found')
        print(f"{words[2]}   Active")
        return 0
    if resource == "pods":
        print("detector-predictor-7d9f8b6c5d-x2x4q")
        return 0
    if resource.startswith("svc/") and "-o" in options:
        ports = os.environ.get("FAKE_SERVICE_PORTS", "http1=80 h2c=8081")
        for pair in ports.split():
            name, port = pair.split("=", 1)
            if f'name=="{name}"' in line:
                sys.stdout.write(port)
        return 0
    if resource.startswith("scaledobject/"):
        # KServe's ScaledObject for a keda-class InferenceService: named after its
        # predictor, the trigger carrying the InferenceService's query.
        ns = options.get("-n", "default")
        for o in state["objects"].values():
            if (o["kind"] == "InferenceService" and o["namespace"] == ns
                    and resource == f"scaledobject/{o['name']}-predictor"
                    and o.get("annotations", {}).get("serving.kserve.io/autoscalerClass")
                    == "keda"):
                (metric,) = o["spec"]["predictor"]["autoScaling"]["metrics"]
                sys.stdout.write(metric["external"]["metric"]["query"])
                return 0
        raise Refused(f'Error from server (NotFound): scaledobjects.keda.sh '
                      f'"{resource.split("/", 1)[1]}" not found')
    if resource in {"configmap", "isvc", "inferenceservice"} and len(words) > 2:
        (kind, k), = _targets(state, words, options, set())
        o = state["objects"].get(k)
        if o is None:
            raise Refused(f'Error from server (NotFound): {kind.lower()}s "{words[2]}" not found')
        output = options.get("-o", "")
        if kind == "InferenceService" and "traffic" in output:
            sys.stdout.write(json.dumps(traffic(o)))
        elif kind == "ConfigMap" and output == "yaml":
            import yaml

            print(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": o["name"], "namespace": o["namespace"]},
                                  "data": o.get("data", {})}, sort_keys=False))
        return 0
    return 0


def cmd_port_forward(argv: list[str]) -> int:
    local = int(argv[-1].split(":", 1)[0])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", local))
    s.listen()
    time.sleep(120)
    return 0


def fail_on_purpose(line: str) -> bool:
    """FAKE_FAIL: fail calls containing it (FAKE_FAIL_TIMES: only that many times)."""
    needle = os.environ.get("FAKE_FAIL")
    if not needle or needle not in line:
        return False
    count_file = Path(os.environ["FAKE_CALLS"] + ".failures")
    failed = int(count_file.read_text()) if count_file.exists() else 0
    times = os.environ.get("FAKE_FAIL_TIMES")
    if times and failed >= int(times):
        return False
    count_file.write_text(str(failed + 1))
    return True


def main(argv: list[str]) -> int:
    line = " ".join(argv)
    with open(os.environ["FAKE_CALLS"], "a") as calls:
        calls.write(f"kubectl {line}\n")
    if fail_on_purpose(line):
        print("fake kubectl: failing on purpose", file=sys.stderr)
        return 1
    words, options, flags = parse(argv)
    if not words:
        return 0
    if words[0] == "port-forward":
        return cmd_port_forward(argv)
    state = load_state()
    try:
        if words[0] == "apply":
            rc = cmd_apply(state, options)
        elif words[0] == "create":
            rc = cmd_create(state, words)
        elif words[0] == "wait":
            rc = cmd_wait(state, words, options, flags)
        elif words[0] == "rollout":
            rc = cmd_rollout(state, words, options)
        elif words[0] == "patch":
            rc = cmd_patch(state, words, options)
        elif words[0] == "get":
            rc = cmd_get(state, words, options, argv)
        else:
            rc = 0  # logs, describe, ...: diagnostics, nothing to check
    except Refused as exc:
        print(exc, file=sys.stderr)
        rc = 1
    save_state(state)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
