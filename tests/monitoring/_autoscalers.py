"""What KEDA and the Kubernetes HPA compute from a metric, written down from their source.

- KServe v0.20.0 turns an InferenceService's External metric into a KEDA trigger
  (pkg/controller/v1beta1/inferenceservice/reconcilers/keda/keda_reconciler.go,
  getKedaMetrics): type = metric.backend, metadata serverAddress, query and
  threshold = target.value; no metricType, so KEDA uses AverageValue
  (kedacore/keda v2.18.0, pkg/scalers/scaler.go, GetMetricTargetType).
- KEDA's Prometheus scaler (v2.18.0, pkg/scalers/prometheus_scaler.go,
  ExecutePromQuery) sends the query to ``{serverAddress}/api/v1/query`` and needs a
  single sample; an empty answer counts as 0 (ignoreNullValues defaults to true).
- The HPA (kubernetes/kubernetes, pkg/controller/podautoscaler/replica_calculator.go):
  for an External metric with an AverageValue target, GetExternalPerPodMetricReplicas
  keeps the current count while |metric / (target x current) - 1| <= tolerance (0.1 by
  default, --horizontal-pod-autoscaler-tolerance), else ceil(metric / target); for CPU
  utilization, GetResourceReplicas computes ratio = (usage / request) / target and
  ceil(ratio x ready pods), with the same tolerance. The result is kept within
  min/maxReplicas and, by the default scale-up behaviour, to at most
  max(2 x current, current + 4) per 15 s (pkg/apis/autoscaling/v2/defaults.go).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TOLERANCE = 0.1


@dataclass(frozen=True)
class KedaTrigger:
    """The trigger KServe puts in the ScaledObject for an External metric."""

    type: str
    server_address: str
    query: str
    threshold: float
    metric_type: str


def keda_trigger(isvc: dict[str, Any]) -> KedaTrigger:
    """The (single) KEDA trigger KServe makes from a rendered InferenceService."""
    (metric,) = isvc["spec"]["predictor"]["autoScaling"]["metrics"]
    assert metric["type"] == "External"
    external = metric["external"]
    return KedaTrigger(type=external["metric"]["backend"],
                       server_address=external["metric"]["serverAddress"],
                       query=external["metric"]["query"],
                       threshold=float(external["target"]["value"]),
                       metric_type="AverageValue")


def keda_metric(result: list[dict[str, Any]]) -> float:
    """The value KEDA's Prometheus scaler reads from an instant-query result."""
    if not result:
        return 0.0  # ignoreNullValues: an empty answer is read as 0, silently
    if len(result) > 1:
        raise ValueError(f"KEDA refuses a query answering {len(result)} series")
    value = float(result[0]["value"][1])
    return 0.0 if math.isinf(value) else value


def hpa_external_average_value(current: int, metric: float, target_per_pod: float) -> int:
    """GetExternalPerPodMetricReplicas: replicas for a summed metric and a per-pod target."""
    ratio = metric / (target_per_pod * current)
    if abs(1.0 - ratio) <= TOLERANCE:
        return current
    return math.ceil(metric / target_per_pod)


def hpa_cpu_utilization(ready: int, usage_cores: float, request_cores: float,
                        target_percent: float) -> int:
    """GetResourceReplicas (every pod ready and measured): replicas for a CPU target."""
    ratio = (usage_cores / request_cores * 100.0) / target_percent
    if abs(1.0 - ratio) <= TOLERANCE:
        return ready
    return math.ceil(ratio * ready)


def bounded(desired: int, current: int, low: int, high: int) -> int:
    """Within min/maxReplicas and the default scale-up rate."""
    rate_limit = max(2 * current, current + 4)
    return max(low, min(high, desired, rate_limit))
