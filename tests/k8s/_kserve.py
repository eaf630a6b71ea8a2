"""What KServe makes of an InferenceService: the predictor container it will run.

For a custom container that is the ``kserve-container`` itself. For a predictor given
by model format, KServe v0.20.0 picks a serving runtime and merges the
InferenceService's ``model`` over the runtime's container; the policy tests check
that result, so the runtime path is held to the same rules as the custom one. The
rules mirrored here, and where KServe has them:

- selection (pkg/apis/serving/v1beta1/predictor_model.go, GetSupportingRuntimes): a
  named runtime, else runtimes whose formats include the model's with autoSelect on
  and that speak its protocol (v1 when unset), namespaced ones before cluster ones,
  then by priority;
- merge (pkg/utils/container_merge.go, MergeRuntimeContainers in
  pkg/controller/v1beta1/inferenceservice/utils/utils.go): a strategic merge patch of
  the container, args appended to the runtime's;
- ``{{.Name}}``-style placeholders filled from the InferenceService's metadata
  (ReplacePlaceholders), and ``runtimeVersion`` replacing the image tag
  (UpdateImageTag).
"""

from __future__ import annotations

import copy
import re
from typing import Any

CONTAINER = "kserve-container"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# Fields of `model` that steer KServe and are not container fields.
MODEL_ONLY = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri",
              "storage"}
# Strategic-merge keys of corev1.Container's lists (k8s.io/api/core/v1 types.go).
MERGE_KEYS = {"ports": "containerPort", "env": "name", "volumeMounts": "mountPath",
              "volumeDevices": "devicePath"}


def mode(isvc: dict[str, Any]) -> str:
    """Deployment mode the InferenceService asks for (the kind script's default: Standard)."""
    return str(isvc["metadata"].get("annotations", {}).get(MODE_ANNOTATION, "Standard"))


def select_runtime(isvc: dict[str, Any], runtimes: list[dict[str, Any]]) -> dict[str, Any]:
    """The ServingRuntime or ClusterServingRuntime KServe would use for a model predictor."""
    model = isvc["spec"]["predictor"]["model"]
    fmt = model["modelFormat"]
    wanted = {fmt["name"]} if "version" not in fmt else {f"{fmt['name']}:{fmt['version']}"}
    protocol = model.get("protocolVersion", "v1")
    named = model.get("runtime")

    def labels(rt: dict[str, Any]) -> set[str]:
        out = set()
        for f in rt["spec"].get("supportedModelFormats", []):
            if named is not None or f.get("autoSelect"):
                out.add(f["name"])
                if "version" in f:
                    out.add(f"{f['name']}:{f['version']}")
        return out

    def priority(rt: dict[str, Any]) -> int:
        return max((f.get("priority", 0) for f in rt["spec"]["supportedModelFormats"]
                    if f["name"] == fmt["name"]), default=0)

    ordered = ([r for r in runtimes if r["kind"] == "ServingRuntime"]
               + [r for r in runtimes if r["kind"] == "ClusterServingRuntime"])
    if named is not None:
        candidates = [r for r in ordered if r["metadata"]["name"] == named]
        assert candidates, f"runtime {named!r} is in no rendered ServingRuntime"
    else:
        candidates = [r for r in ordered
                      if not r["spec"].get("disabled") and wanted <= labels(r)
                      and protocol in r["spec"].get("protocolVersions", [protocol])]
        assert candidates, f"no runtime auto-selects {wanted} over {protocol}"
        namespaced = [r for r in candidates if r["kind"] == "ServingRuntime"]
        group = namespaced or candidates
        candidates = sorted(group, key=priority, reverse=True)
    chosen = candidates[0]
    assert wanted <= labels(chosen), f"{chosen['metadata']['name']} does not serve {wanted}"
    assert protocol in chosen["spec"].get("protocolVersions", [protocol]), (
        f"{chosen['metadata']['name']} does not speak {protocol}")
    return chosen


def strategic_merge(base: Any, patch: Any, key: str = "") -> Any:
    """A strategic merge patch as Kubernetes applies it to a container's JSON."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        merge_key = MERGE_KEYS[key]
        out_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next((i for i, b in enumerate(out_list)
                          if b.get(merge_key) == item.get(merge_key)), None)
            if index is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[index] = strategic_merge(out_list[index], item)
        return out_list
    return copy.deepcopy(patch)


def fill_placeholders(container: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The container with ``{{.Name}}``, ``{{.Namespace}}`` ... filled from metadata."""
    def fill(value: Any) -> Any:
        if isinstance(value, str):
            def one(match: re.Match[str]) -> str:
                field = match.group(1)
                field = field[0].lower() + field[1:]
                assert field in {"name", "namespace"}, f"placeholder {match.group(0)} unsupported"
                return str(meta.get(field, "NAMESPACE" if field == "namespace" else ""))
            filled = re.sub(r"\{\{\s*\.(\w+)\s*\}\}", one, value)
            assert "{{" not in filled, f"unfilled placeholder in {value!r}"
            return filled
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value
    return fill(container)  # type: ignore[no-any-return]


def predictor_container(isvc: dict[str, Any],
                        runtimes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The predictor container KServe runs for an InferenceService (a fresh copy)."""
    predictor = isvc["spec"]["predictor"]
    if "containers" in predictor:
        return copy.deepcopy(next(c for c in predictor["containers"] if c["name"] == CONTAINER))
    model = predictor["model"]
    runtime = select_runtime(isvc, runtimes or [])
    base = next(c for c in runtime["spec"]["containers"] if c["name"] == CONTAINER)
    overrides = {k: v for k, v in model.items() if k not in MODEL_ONLY and k != "args"}
    merged = strategic_merge(base, overrides)
    merged["args"] = [*base.get("args", []), *model.get("args", [])]
    merged = fill_placeholders(merged, isvc["metadata"])
    if "runtimeVersion" in model and "@sha256:" not in merged["image"]:
        repository = re.sub(r":[\w.\-]*$", "", merged["image"])
        merged["image"] = f"{repository}:{model['runtimeVersion']}"
    return merged


def predictor_volumes(isvc: dict[str, Any],
                      runtimes: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The pod volumes: the predictor's, over the runtime's (merged by name)."""
    predictor = isvc["spec"]["predictor"]
    volumes = predictor.get("volumes", [])
    if "model" not in predictor:
        return list(volumes)
    runtime = select_runtime(isvc, runtimes or [])
    merged = {v["name"]: v for v in runtime["spec"].get("volumes", [])}
    merged.update({v["name"]: v for v in volumes})
    return list(merged.values())
