"""KServe's validating webhooks in the fake cluster (_fake_cluster.py): what they refuse
of an InferenceService, a ServingRuntime and a ClusterServingRuntime beyond the
deployment mode. Each check follows KServe v0.20.0:

- pkg/apis/serving/v1beta1/inference_service_validation.go, validateInferenceService:
  the name format (IsvcNameFmt), the autoscaler class (constants.AutoscalerAllowedClassList),
  the autoscaling fields per mode and class (validateAutoScalingCompExtension: HPA
  metrics cpu/memory and a 1-100 CPU target; KEDA refuses scaleMetric and needs a query
  and a threshold; Knative metrics concurrency/rps), and the `canary` list
  (validateCanarySpecs: Standard mode only, names, 0-100 each and in sum, fixed replicas);
- pkg/apis/serving/v1beta1/component.go, ComponentExtensionSpec.Validate: replica bounds
  and containerConcurrency;
- pkg/webhook/admission/servingruntime/servingruntime_webhook.go: two auto-selected
  runtimes of one scope (a namespace, or the cluster) that share a protocol may not give
  the same model format the same priority (validateServingRuntimePriority).
"""

from __future__ import annotations

import re
from typing import Any

MODE = "serving.kserve.io/deploymentMode"
CLASS = "serving.kserve.io/autoscalerClass"
NAME_FORMAT = "[a-z]([-a-z0-9]*[a-z0-9])?"
CLASSES = {"hpa", "external", "keda", "none"}
ISVC_WEBHOOK = "inferenceservice.kserve-webhook-server.validator"


def _denied(webhook: str, why: str) -> str:
    return (f'Error from server (Forbidden): admission webhook "{webhook}" denied the '
            f"request: {why}")


def isvc_refusal(isvc: dict[str, Any]) -> str | None:
    """Why KServe's InferenceService webhook refuses this object, or None."""
    why = _isvc_error(isvc)
    return _denied(ISVC_WEBHOOK, why) if why else None


def _isvc_error(isvc: dict[str, Any]) -> str | None:
    name = isvc["name"]
    if not re.fullmatch(NAME_FORMAT, name):
        return (f'the InferenceService "{name}" is invalid: a InferenceService name must '
                "consist of lower case alphanumeric characters or '-', and must start with "
                f"alphabetical character. (regex used for validation is '{NAME_FORMAT}')")
    annotations = isvc.get("annotations", {})
    klass = annotations.get(CLASS)
    if klass is not None and klass not in CLASSES:
        return f"[{klass}] is not a supported autoscaler class type"
    predictor = isvc.get("spec", {}).get("predictor", {})
    return (_extensions(predictor) or _autoscaling(annotations, predictor)
            or _canaries(isvc, annotations, predictor))


def _extensions(ext: dict[str, Any]) -> str | None:
    low, high = ext.get("minReplicas", 1), ext.get("maxReplicas", 0)
    if ext.get("containerConcurrency", 0) < 0:
        return "parallelism cannot be less than 0"
    if low < 0:
        return "'MinReplicas' cannot be less than 0"
    if high < 0:
        return "'MaxReplicas' cannot be less than 0"
    if low > high and high != 0:
        return "'MinReplicas' cannot be greater than MaxReplicas"
    return None


def _autoscaling(annotations: dict[str, str], ext: dict[str, Any]) -> str | None:
    metric, target = ext.get("scaleMetric"), ext.get("scaleTarget")
    metrics = ext.get("autoScaling", {}).get("metrics", [])
    if annotations.get(MODE) == "Standard":
        klass = annotations.get(CLASS)
        if klass == "hpa":
            metric = metric or "cpu"
            if metric not in {"cpu", "memory"}:
                return f"[{metric}] is not a supported metric"
            if target is not None and ((metric == "cpu" and target < 1) or target > 100):
                return "the target utilization percentage should be a [1-100] integer"
            if any(m.get("type") != "Resource" for m in metrics):
                return ("invalid HPA metric source type, valid metric source types are "
                        "Resource")
        elif klass == "keda":
            if metric is not None:
                return "ScaleMetric is not supported for KEDA"
            for m in metrics:
                if m.get("type") == "External":
                    external = m.get("external", {})
                    if not external.get("metric", {}).get("query"):
                        return "the query should not be empty"
                    if external.get("target", {}).get("value") is None:
                        return "the target threshold value should not be empty"
                elif m.get("type") not in {"Resource", "PodMetric"}:
                    return (f"unknown KEDA metric type with value [{m.get('type')}].Valid "
                            "types are Resource,External,PodMetric")
        return None
    metric = metric or "concurrency"
    if metric not in {"concurrency", "rps"}:
        return f"[{metric}] is not a supported metric"
    if metric == "rps" and target is not None and target < 1:
        return "the target for rps should be greater than 1"
    return None


def _canaries(isvc: dict[str, Any], annotations: dict[str, str],
              predictor: dict[str, Any]) -> str | None:
    canaries = isvc.get("spec", {}).get("canary") or []
    if not canaries:
        return None
    if annotations.get(MODE) != "Standard":
        return "canary is only supported in Standard deployment mode"
    names: set[str] = set()
    total = 0
    for i, canary in enumerate(canaries):
        spec = canary.get("predictor", {})
        name = spec.get("name", "")
        if not name:
            return f"canary[{i}] predictor.name is required"
        if name in names:
            return f'canary predictor.name "{name}" is duplicated'
        names.add(name)
        percent = canary.get("trafficPercent", 0)
        if not 0 <= percent <= 100:
            return f'canary "{name}" trafficPercent must be between 0 and 100, got {percent}'
        total += percent
        for field in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
            if spec.get(field):
                return f'canary "{name}" must not set {field} (canary uses fixed replicas)'
        stable_min = predictor.get("minReplicas", 1)
        if spec.get("minReplicas", 0) > stable_min:
            return (f'canary "{name}" minReplicas ({spec["minReplicas"]}) must not exceed '
                    f"stable predictor minReplicas ({stable_min})")
    if total > 100:
        return f"sum of canary trafficPercent values ({total}) must be <= 100"
    return None


def runtime_refusal(state: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Why KServe's runtime webhook refuses this (Cluster)ServingRuntime, or None."""
    spec = new.get("spec", {})
    if spec.get("disabled"):
        return None
    scope = [o for o in state["objects"].values()
             if o["kind"] == new["kind"] and "spec" in o and o["name"] != new["name"]
             and (new["kind"] == "ClusterServingRuntime"
                  or o["namespace"] == new["namespace"])]
    for old in scope:
        theirs = old["spec"]
        if (theirs.get("disabled") or bool(theirs.get("multiModel"))
                != bool(spec.get("multiModel"))):
            continue
        if not set(theirs.get("protocolVersions", [])) & set(spec.get("protocolVersions", [])):
            continue
        for a in theirs.get("supportedModelFormats", []):
            for b in spec.get("supportedModelFormats", []):
                if (a.get("autoSelect") and b.get("autoSelect")
                        and a["name"].lower() == b["name"].lower()
                        and a.get("version") == b.get("version")
                        and a.get("priority") is not None
                        and a.get("priority") == b.get("priority")):
                    webhook = ("clusterservingruntime" if new["kind"] == "ClusterServingRuntime"
                               else "servingruntime") + ".kserve-webhook-server.validator"
                    where = ("" if new["kind"] == "ClusterServingRuntime"
                             else f" in namespace {new['namespace']}")
                    return _denied(webhook, (
                        f"same priority assigned for the model format {b['name']} in the "
                        f"{new['kind'].lower()}s {old['name']} and {new['name']}{where}"))
    return None
