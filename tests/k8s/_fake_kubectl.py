"""A stand-in for ``kubectl`` against a kind cluster. Run as a program by the
``kubectl`` on the test's PATH (see _fakes.py); the cluster and its rules are in
_fake_cluster.py.

It answers what the kind script and the documented steps run: apply (-f a release URL,
a file or stdin, -k a kustomization rendered by the real kubectl), create namespace,
create --dry-run=server, wait, rollout status, patch, get (a few -o jsonpath forms),
delete, port-forward (which really listens on its local port), and accepts the
diagnostics commands (logs, describe) silently. KServe's controller and KEDA's webhook
are in _fake_kserve.py, KServe's validating webhooks in _fake_admission.py. Knobs:
FAKE_FAIL / FAKE_FAIL_TIMES (fail calls containing a string), FAKE_MINOR (server
version), FAKE_SERVICE_PORTS (the predictor Service's ports), FAKE_CA_INJECT_SECONDS
(cert-manager's CA bundle lands that long after its Deployments are Available),
FAKE_NODE_GPUS, FAKE_REGISTRY_IMAGES (images a registry has; the node holds what the
fake `kind load` loaded).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _fake_kserve as kserve  # noqa: E402
from _fake_cluster import (  # noqa: E402
    Refused,
    admit,
    inference_service,
    key,
    kserve_validation,
    load_state,
    merge,
    read_objects,
    ready,
    save_state,
    store,
    traffic,
    webhook_refusal,
)


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

def cmd_apply(state: dict[str, Any], options: dict[str, str]) -> int:
    failures = []
    for o in read_objects(options):
        try:
            print(store(state, o, options.get("-n")))
        except Refused as exc:
            failures.append(str(exc))
    reconcile_all(state)
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


def reconcile_all(state: dict[str, Any]) -> None:
    """KServe's controller, once over every InferenceService (it watches them all)."""
    for o in list(state["objects"].values()):
        if o["kind"] == "InferenceService":
            kserve.reconcile(state, o)


def cmd_create(state: dict[str, Any], words: list[str], options: dict[str, str],
               flags: set[str]) -> int:
    if "--dry-run" in flags and "-f" in options:
        # A server-side dry run: admitted (or refused) as a create, stored nowhere.
        for o in read_objects(options):
            print(admit(state, o, options.get("-n")) + " (server dry run)")
        return 0
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
               "scaledobject": "ScaledObject", "scaledobjects": "ScaledObject",
               "hpa": "HorizontalPodAutoscaler",
               "horizontalpodautoscaler": "HorizontalPodAutoscaler"}
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
            if not o.get("available"):
                o["available_at"] = time.time()
            o["available"] = True
        if condition == "condition=Ready" and kind == "InferenceService":
            # The controller retried a failed reconcile meanwhile (with backoff).
            kserve.reconcile(state, o)
            if o["status"].get("controllerError"):
                raise Refused("error: timed out waiting for the condition on "
                              f"inferenceservices/{o['name']} (controller: "
                              f"{o['status']['controllerError']})")
            problem = kserve.pod_problem(state, o)
            if problem:
                raise Refused("error: timed out waiting for the condition on "
                              f"inferenceservices/{o['name']} (predictor pod: {problem})")
            ready(state, o)
    state["last_wait"] = state["seq"]
    for _, k in targets:
        print(f"{k} condition met")
    return 0


def cmd_rollout(state: dict[str, Any], words: list[str], options: dict[str, str]) -> int:
    if words[1:2] == ["status"]:
        kind_name = words[2]
        k = key("Deployment", options.get("-n", "default"), kind_name.split("/", 1)[1])
        if k not in state["objects"]:
            raise Refused(f'Error from server (NotFound): deployments "{kind_name}" not found')
        problem = kserve.deployment_problem(state["objects"][k])
        if problem:
            raise Refused(f'error: deployment "{kind_name}" exceeded its progress deadline '
                          f"(pod: {problem})")
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
    why = kserve_validation(state, merged)
    if why:
        raise Refused(why)
    if kind == "InferenceService":
        merged = inference_service(state, merged, o)
    state["objects"][k] = merged
    reconcile_all(state)
    print(f"{kind.lower()}/{o['name']} patched")
    return 0


def get_autoscaler(state: dict[str, Any], words: list[str], options: dict[str, str],
                   flags: set[str]) -> int:
    """``get hpa|scaledobject NAME -o jsonpath=...``: what KServe and KEDA made (only
    what exists: a ScaledObject needs KEDA's CRD)."""
    (kind, k), = _targets(state, words, options, flags)
    if kind == "ScaledObject" and ("keda.sh", "ScaledObject") not in kserve.served_kinds(state):
        raise Refused('error: the server doesn\'t have a resource type "scaledobject"')
    o = state["objects"].get(k)
    if o is None:
        if "--ignore-not-found" in flags:
            return 0
        plural = "scaledobjects.keda.sh" if kind == "ScaledObject" else \
            "horizontalpodautoscalers.autoscaling"
        raise Refused(f'Error from server (NotFound): {plural} "{k.rsplit("/", 1)[-1]}" '
                      "not found")
    sys.stdout.write(jsonpath(kserve.manifest(o), options.get("-o", "")))
    return 0


def jsonpath(doc: Any, output: str) -> str:
    """The few ``-o jsonpath=`` forms the script reads: dotted fields, ``[N]`` and
    ``[?(@.field=="value")]`` filters."""
    import re

    if not output.startswith("jsonpath="):
        return ""
    path = output.split("=", 1)[1].strip("{}'")
    nodes = [doc]
    for step in re.findall(r'\.(\w+)|\[(\d+)\]|\[\?\(@\.(\w+)=="([^"]*)"\)\]', path):
        field, index, filter_key, filter_value = step
        out: list[Any] = []
        for node in nodes:
            if field and isinstance(node, dict) and field in node:
                out.append(node[field])
            elif index and isinstance(node, list) and int(index) < len(node):
                out.append(node[int(index)])
            elif filter_key and isinstance(node, list):
                out += [n for n in node if isinstance(n, dict)
                        and str(n.get(filter_key)) == filter_value]
        nodes = out
    return " ".join(n if isinstance(n, str) else json.dumps(n) for n in nodes)


def cmd_delete(state: dict[str, Any], words: list[str], options: dict[str, str],
               flags: set[str]) -> int:
    for kind, k in _targets(state, words, options, flags):
        if k not in state["objects"]:
            if "--ignore-not-found" in flags:
                continue
            raise Refused(f'Error from server (NotFound): {kind.lower()} '
                          f'"{k.rsplit("/", 1)[-1]}" not found')
        kserve.delete(state, k)
        print(f'{kind.lower()}.{"autoscaling" if kind == "HorizontalPodAutoscaler" else "keda.sh"} '
              f'"{k.rsplit("/", 1)[-1]}" deleted')
    return 0


def cmd_get(state: dict[str, Any], words: list[str], options: dict[str, str],
            argv: list[str], flags: set[str]) -> int:
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
    if resource.split("/", 1)[0] in {"scaledobject", "scaledobjects", "hpa"}:
        return get_autoscaler(state, words, options, flags)
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
    failed = int(count_file.read_text(encoding="utf-8")) if count_file.exists() else 0
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
            rc = cmd_create(state, words, options, flags)
        elif words[0] == "wait":
            rc = cmd_wait(state, words, options, flags)
        elif words[0] == "rollout":
            rc = cmd_rollout(state, words, options)
        elif words[0] == "patch":
            rc = cmd_patch(state, words, options)
        elif words[0] == "get":
            rc = cmd_get(state, words, options, argv, flags)
        elif words[0] == "delete":
            rc = cmd_delete(state, words, options, flags)
        else:
            rc = 0  # logs, describe, ...: diagnostics, nothing to check
    except Refused as exc:
        print(exc, file=sys.stderr)
        rc = 1
    save_state(state)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
