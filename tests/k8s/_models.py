"""Offline validation of rendered objects against the API models the Python packages ship.

The ``kserve`` package carries the v1beta1/v1alpha1 API models (``V1beta1InferenceService``,
``V1alpha1ServingRuntime``, ``V1alpha1ClusterServingRuntime`` ...) and the ``kubernetes``
package the core ones (``V1Container``, ``V1Deployment`` ...). Each model lists its fields
in ``attribute_map`` (Python name -> JSON key) and their types in ``openapi_types``. This
module walks a rendered object along those types, as the API server would decode it with
strict field validation: an unknown field, a wrong primitive type, a missing required
field, a duplicate list-map key or a value outside an enum is an error. No cluster, no CRD
file and nothing outside the installed packages is needed.

What the packages do not carry is written down here, each with its upstream source:
enums (kubebuilder markers), quantities, int-or-string fields, list-map keys, and two
KServe types the Python package names but does not define.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

# apiVersion/kind -> (package, model class).
ROOT_MODELS: dict[tuple[str, str], tuple[str, str]] = {
    ("serving.kserve.io/v1beta1", "InferenceService"): ("kserve", "V1beta1InferenceService"),
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): ("kserve", "V1alpha1ServingRuntime"),
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"):
        ("kserve", "V1alpha1ClusterServingRuntime"),
    ("apps/v1", "Deployment"): ("kubernetes", "V1Deployment"),
    ("v1", "Service"): ("kubernetes", "V1Service"),
    ("v1", "ServiceAccount"): ("kubernetes", "V1ServiceAccount"),
}

# Go type names KServe's generated models refer to without defining them
# (k8s.io/api/apps/v1.DeploymentStrategy, k8s.io/api/autoscaling/v2.
# HorizontalPodAutoscalerBehavior): the kubernetes package's models of the same types.
ALIASES = {
    "K8sIoApiAppsV1DeploymentStrategy": "V1DeploymentStrategy",
    "K8sIoApiAutoscalingV2HorizontalPodAutoscalerBehavior": "V2HorizontalPodAutoscalerBehavior",
}
# resource.Quantity: a string such as "500m" or "2Gi", or a plain number.
QUANTITY_TYPES = {"ResourceQuantity", "V1beta1MetricQuantity"}
QUANTITY_FIELDS = {("V1ResourceRequirements", "limits"), ("V1ResourceRequirements", "requests"),
                   ("V1EmptyDirVolumeSource", "size_limit")}
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?")
# Free-form JSON (managedFields); every other `object` in these models is an
# IntOrString (probe and Service target ports, rolling-update surge).
FREE_FORM = {("V1ManagedFieldsEntry", "fields_v1")}

# Enums the Python models do not check. KServe's: +kubebuilder:validation:Enum markers
# in pkg/apis/serving/v1beta1/component.go and the protocol constants in
# pkg/constants/constants.go (v0.20.0). Core ones: k8s.io/api/core/v1 types.go.
PROTOCOL_VERSIONS = {"v1", "v2", "grpc-v1", "grpc-v2"}
ENUMS: dict[tuple[str, str], set[str]] = {
    ("V1beta1PredictorSpec", "scale_metric"): {"cpu", "memory", "concurrency", "rps"},
    ("V1beta1PredictorSpec", "scale_metric_type"): {"Utilization", "Value", "AverageValue"},
    ("V1beta1MetricsSpec", "type"): {"Resource", "External", "PodMetric"},
    ("V1beta1MetricTarget", "type"): {"Utilization", "Value", "AverageValue"},
    ("V1beta1ExternalMetrics", "backend"): {"prometheus", "graphite"},
    ("V1beta1ModelSpec", "protocol_version"): PROTOCOL_VERSIONS,
    ("V1alpha1ServingRuntimeSpec", "protocol_versions"): PROTOCOL_VERSIONS,
    ("V1Container", "image_pull_policy"): {"Always", "IfNotPresent", "Never"},
    ("V1beta1ModelSpec", "image_pull_policy"): {"Always", "IfNotPresent", "Never"},
    ("V1ContainerPort", "protocol"): {"TCP", "UDP", "SCTP"},
    ("V1ServicePort", "protocol"): {"TCP", "UDP", "SCTP"},
    ("V1HTTPGetAction", "scheme"): {"HTTP", "HTTPS"},
    ("V1ServiceSpec", "type"): {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"},
    ("V1SeccompProfile", "type"): {"RuntimeDefault", "Localhost", "Unconfined"},
    ("V1Toleration", "operator"): {"Exists", "Equal"},
    ("V1Toleration", "effect"): {"NoSchedule", "PreferNoSchedule", "NoExecute"},
}

# Required by KServe's CRDs (fields without omitempty in pkg/apis/serving, v0.20.0) but
# not enforced by the Python models, by (model, attribute).
EXTRA_REQUIRED = {
    ("V1beta1ModelFormat", "name"), ("V1alpha1SupportedModelFormat", "name"),
    ("V1beta1MetricsSpec", "type"), ("V1beta1ResourceMetricSource", "name"),
    ("V1beta1StorageUri", "uri"), ("V1beta1CanarySpec", "traffic_percent"),
}

# x-kubernetes-list-map-keys of core lists, by item type (protocol defaults to TCP).
LIST_MAP_KEYS = {
    "V1ContainerPort": ("containerPort", "protocol"),
    "V1ServicePort": ("port", "protocol"),
    "V1EnvVar": ("name",),
    "V1Container": ("name",),
    "V1Volume": ("name",),
    "V1VolumeMount": ("mountPath",),
}

# DNS-1035 label: Service names and KServe's InferenceService names (IsvcNameFmt).
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


@dataclass(frozen=True)
class Field:
    """One field of a model: its JSON key, type string and whether it must be set."""

    attr: str
    key: str
    type: str
    required: bool


def _model_class(name: str) -> Any:
    import kserve.models
    import kubernetes.client.models

    name = ALIASES.get(name, name)
    return getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name, None)


def _required_attrs(cls: Any) -> set[str]:
    """Fields a model refuses to be built without."""
    fields = getattr(cls, "model_fields", None)
    if fields is not None:  # kubernetes >= 35: pydantic models
        return {a for a, f in fields.items() if f.is_required()}
    # kserve: generated classes whose setters raise ValueError("Invalid value for `x`,
    # must not be `None`") for required fields.
    required = set()
    for attr in cls.openapi_types:
        others = {a: object() for a in cls.openapi_types if a != attr}
        try:
            cls(**others)
        except ValueError as exc:
            if f"`{attr}`" in str(exc):
                required.add(attr)
        except TypeError:
            continue
    return required


@cache
def fields_of(name: str) -> dict[str, Field] | None:
    """A model's fields by JSON key, or None when neither package defines it."""
    cls = _model_class(name)
    if cls is None:
        return None
    required = _required_attrs(cls) | {a for m, a in EXTRA_REQUIRED if m == name}
    return {key: Field(attr, key, cls.openapi_types[attr], attr in required)
            for attr, key in cls.attribute_map.items()}


def _container_type(type_: str) -> tuple[str, str] | None:
    """("list", item) or ("dict", value) for a container type string, else None."""
    match = re.fullmatch(r"(?:list|List)\[(.+)\]", type_)
    if match:
        return "list", match.group(1)
    match = re.fullmatch(r"(?:dict\(str, (.+)\)|Dict\[str, (.+)\])", type_)
    if match:
        return "dict", match.group(1) or match.group(2)
    return None


class Validator:
    """Collects ``path: message`` errors for one object."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path or '<root>'}: {message}")

    def value(self, value: Any, type_: str, path: str, owner: tuple[str, str] = ("", "")) -> None:
        """Checks ``value`` against an openapi type string."""
        if value is None:
            return  # null: the API server treats it as unset
        nested = _container_type(type_)
        if nested is not None:
            self._nested(value, nested, path, owner)
        elif owner in QUANTITY_FIELDS or type_ in QUANTITY_TYPES:
            self._quantity(value, path)
        elif type_ == "object":
            if owner not in FREE_FORM and (isinstance(value, bool)
                                           or not isinstance(value, int | str)):
                self.error(path, f"expected an integer or a string, got {value!r}")
        elif type_ in {"str", "datetime", "date"}:
            if not isinstance(value, str):
                self.error(path, f"expected a string, got {type(value).__name__} {value!r}")
        elif type_ == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                self.error(path, f"expected an integer, got {type(value).__name__} {value!r}")
        elif type_ == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.error(path, f"expected a number, got {value!r}")
        elif type_ == "bool":
            if not isinstance(value, bool):
                self.error(path, f"expected true or false, got {value!r}")
        else:
            self.model(value, type_, path)
        allowed = ENUMS.get(owner)
        if allowed is not None and isinstance(value, str) and value not in allowed:
            self.error(path, f"{value!r} is not one of {sorted(allowed)}")

    def _nested(self, value: Any, nested: tuple[str, str], path: str,
                owner: tuple[str, str]) -> None:
        kind, inner = nested
        if kind == "list":
            if not isinstance(value, list):
                self.error(path, f"expected a list, got {value!r}")
                return
            for i, item in enumerate(value):
                self.value(item, inner, f"{path}/{i}", owner)
            self._unique(value, inner, path)
        else:
            if not isinstance(value, dict):
                self.error(path, f"expected a map, got {value!r}")
                return
            for key, item in value.items():
                self.value(item, inner, f"{path}/{key}", owner)

    def _quantity(self, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.error(path, f"expected a quantity, got {value!r}")
        elif isinstance(value, str) and not _QUANTITY.fullmatch(value):
            self.error(path, f"{value!r} is not a quantity (e.g. 500m, 2Gi)")

    def _unique(self, items: list[Any], item_type: str, path: str) -> None:
        keys = LIST_MAP_KEYS.get(item_type)
        if keys is None:
            return
        seen: set[tuple[Any, ...]] = set()
        for item in items:
            if isinstance(item, dict):
                ident = tuple(item.get(k, "TCP" if k == "protocol" else None) for k in keys)
                if ident in seen:
                    self.error(path, f"duplicate entry for {list(keys)}: {ident}")
                seen.add(ident)

    def model(self, value: Any, name: str, path: str) -> None:
        """Checks a JSON object against a model: known keys only, required ones present."""
        fields = fields_of(name)
        if fields is None:
            self.error(path, f"type {name} is defined in neither the kserve nor the kubernetes "
                             "package: this field cannot be checked offline")
            return
        if not isinstance(value, dict):
            self.error(path, f"expected an object ({name}), got {value!r}")
            return
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                self.error(f"{path}/{key}", f"unknown field {key!r} in {name}")
                continue
            self.value(item, field.type, f"{path}/{key}", (ALIASES.get(name, name), field.attr))
        for field in fields.values():
            if field.required and value.get(field.key) is None:
                self.error(f"{path}/{field.key}", f"required field of {name} is missing")

    def metadata(self, meta: Any) -> None:
        """What the API server checks in any object's metadata."""
        if not isinstance(meta, dict):
            self.error("metadata", "missing")
            return
        name = meta.get("name")
        if not isinstance(name, str) or len(name) > 63 or not _NAME.fullmatch(name):
            self.error("metadata/name", f"{name!r} is not a DNS-1035 label")
        for key, value in (meta.get("labels") or {}).items():
            if not _LABEL_KEY.fullmatch(str(key)):
                self.error(f"metadata/labels/{key}", "invalid label key")
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
                self.error(f"metadata/labels/{key}", f"invalid label value {value!r}")
        for key, value in (meta.get("annotations") or {}).items():
            if not isinstance(value, str):
                self.error(f"metadata/annotations/{key}",
                           f"annotation values are strings, got {value!r}")


def validate(obj: dict[str, Any]) -> list[str]:
    """Errors in one rendered object, as ``path: message``; empty when valid."""
    api = (str(obj.get("apiVersion")), str(obj.get("kind")))
    root = ROOT_MODELS.get(api)
    if root is None:
        return [f"<root>: no model for {api[0]} {api[1]} (known: {sorted(ROOT_MODELS)})"]
    checker = Validator()
    if "status" in obj:
        checker.error("status", "is written by the controller, not by a manifest")
    checker.metadata(obj.get("metadata"))
    body = {k: v for k, v in obj.items() if k not in {"metadata", "status"}}
    checker.model(body, root[1], "")
    return sorted(checker.errors)
