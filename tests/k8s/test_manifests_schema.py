"""Rendered objects validate against the kserve and kubernetes API models, unknown fields rejected.

A manifest that passes ``kubectl kustomize`` can still be refused by the API server
(or, worse, have a misspelt field silently pruned). These tests decode every rendered
object along the models of the installed ``kserve`` and ``kubernetes`` packages, as the
API server decodes it with strict field validation. With ``KSERVE_CRDS_DIR`` set, the
KServe objects are also checked against the CRDs' openAPIV3Schema, and each mistake
below must be refused by both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._models import ENUMS, PROTOCOL_VERSIONS
from ._support import CRD_FILES, MANIFESTS, OVERLAYS, OVERLAYS_DIR, crd_validator, load_crd_schema

pytestmark = pytest.mark.k8s

Errors = Callable[[dict[str, Any]], list[str]]
Render = Callable[[str | Path], list[dict[str, Any]]]

DIRECTORIES = [MANIFESTS / d for d in ("base", "model", "runtime", "runtime-light", "app")] + [
    OVERLAYS_DIR / o for o in OVERLAYS]
IDS = ["base", "model", "runtime", "runtime-light", "app", *OVERLAYS]


@pytest.mark.parametrize("directory", DIRECTORIES, ids=IDS)
def test_every_rendered_object_matches_the_api_models(directory: Path, render: Render,
                                                      api_errors: Errors) -> None:
    objects = render(directory)
    assert objects
    for obj in objects:
        assert api_errors(obj) == [], f"{obj['kind']} {obj['metadata']['name']}"


# --- mistakes each validator must refuse ---------------------------------------------

def _isvc(render: Render) -> dict[str, Any]:
    (obj,) = render(MANIFESTS / "base")
    return obj


def _model_isvc(render: Render) -> dict[str, Any]:
    (obj,) = render(MANIFESTS / "model")
    return obj


def _runtime(render: Render) -> dict[str, Any]:
    (obj,) = render(MANIFESTS / "runtime")
    return obj


def _deployment(render: Render) -> dict[str, Any]:
    return next(o for o in render(MANIFESTS / "app") if o["kind"] == "Deployment")


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    if obj["kind"] == "Deployment":
        spec = spec["template"]["spec"]
    elif obj["kind"] == "InferenceService":
        spec = spec["predictor"]
    return spec["containers"][0]  # type: ignore[no-any-return]


def _rename(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


Mutation = tuple[Callable[[Render], dict[str, Any]], Callable[[dict[str, Any]], None], str]
MUTATIONS: dict[str, Mutation] = {
    "misspelt probe field": (
        _isvc, lambda o: _rename(_container(o)["readinessProbe"]["httpGet"], "path", "paht"),
        "readinessProbe/httpGet/paht"),
    "misspelt predictor field": (
        _isvc, lambda o: _rename(o["spec"]["predictor"], "minReplicas", "minReplica"),
        "predictor/minReplica"),
    "misspelt model field": (
        _model_isvc, lambda o: _rename(o["spec"]["predictor"]["model"], "modelFormat",
                                       "modelformat"),
        "model/modelformat"),
    "model format without a name": (
        _model_isvc, lambda o: o["spec"]["predictor"]["model"]["modelFormat"].pop("name"),
        "modelFormat/name"),
    "quoted number for an integer": (
        _isvc, lambda o: o["spec"]["predictor"].update(scaleTarget="16"), "scaleTarget"),
    "port that is neither integer nor name": (
        _isvc, lambda o: _container(o)["readinessProbe"]["httpGet"].update(port=80.5),
        "readinessProbe/httpGet/port"),
    "duplicate container port": (
        _isvc, lambda o: _container(o)["ports"].append({"name": "again", "containerPort": 8080}),
        "ports"),
    "non-string annotation": (
        _isvc, lambda o: o["metadata"]["annotations"].update({"serving.kserve.io/x": True}),
        "annotations"),
    "scale metric outside the enum": (
        _isvc, lambda o: o["spec"]["predictor"].update(scaleMetric="gpu"), "scaleMetric"),
    "runtime field misspelt": (
        _runtime, lambda o: _rename(o["spec"], "supportedModelFormats", "supportedModelFormat"),
        "spec/supportedModelFormat"),
    "autoSelect as a string": (
        _runtime, lambda o: o["spec"]["supportedModelFormats"][0].update(autoSelect="yes"),
        "autoSelect"),
    "unknown protocol version": (
        _runtime, lambda o: o["spec"]["protocolVersions"].append("v3"), "protocolVersions"),
    "runtime container without a name": (
        _runtime, lambda o: _container(o).pop("name"), "containers/0/name"),
    "deployment field misspelt": (
        _deployment, lambda o: _rename(o["spec"], "replicas", "replica"), "spec/replica"),
    "memory quantity with a space": (
        _deployment, lambda o: _container(o)["resources"]["limits"].update(memory="512 Mi"),
        "limits/memory"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_api_models_refuse(name: str, render: Render, api_errors: Errors) -> None:
    source, mutate, where = MUTATIONS[name]
    obj = source(render)
    assert api_errors(obj) == []
    mutate(obj)
    errors = api_errors(obj)
    assert any(where in e for e in errors), errors


def test_int_or_string_fields_take_both(render: Render, api_errors: Errors) -> None:
    obj = _isvc(render)
    container = _container(obj)
    container["readinessProbe"]["httpGet"]["port"] = "http1"
    container["resources"]["limits"]["cpu"] = 4
    assert api_errors(obj) == []


def test_status_is_not_for_manifests(render: Render, api_errors: Errors) -> None:
    obj = _isvc(render)
    obj["status"] = {"url": "http://x"}
    assert any(e.startswith("status") for e in api_errors(obj))


def test_unknown_kinds_are_reported_not_waved_through(api_errors: Errors) -> None:
    obj = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
           "metadata": {"name": "x"}, "spec": {}}
    assert any("no model" in e for e in api_errors(obj))


# --- the extra check: KServe's CRDs (KSERVE_CRDS_DIR) --------------------------------

def _crd_errors(obj: dict[str, Any]) -> list[str]:
    validator = crd_validator(obj["kind"])
    return ["/".join(str(p) for p in e.absolute_path) + ": " + e.message
            for e in validator.iter_errors(obj)]


@pytest.mark.parametrize("directory", DIRECTORIES, ids=IDS)
def test_kserve_objects_match_the_crds(directory: Path, render: Render) -> None:
    objects = [o for o in render(directory) if o["kind"] in CRD_FILES]
    for obj in objects:
        assert _crd_errors(obj) == [], f"{obj['kind']} {obj['metadata']['name']}"


# Refused on a cluster, but not by the CRD's JSON schema.
NOT_IN_CRD = {
    "duplicate container port": "list-map keys are enforced by the API server's own code",
    "non-string annotation": "metadata is checked by the API server's own code",
    "unknown protocol version": "a plain string in the CRD; KServe matches it against its "
                                "constants and finds no runtime",
}


@pytest.mark.parametrize("name", sorted(n for n, m in MUTATIONS.items()
                                        if m[0] is not _deployment and n not in NOT_IN_CRD))
def test_crds_refuse_the_same_mistakes(name: str, render: Render) -> None:
    source, mutate, _ = MUTATIONS[name]
    obj = source(render)
    mutate(obj)
    assert _crd_errors(obj), f"the CRD accepts: {name}"


def test_enum_table_matches_the_crd() -> None:
    # The Python models carry no enums: the table in _models.py must equal the CRD's.
    predictor = load_crd_schema("InferenceService")["properties"]["spec"]["properties"][
        "predictor"]["properties"]
    assert set(predictor["scaleMetric"]["enum"]) == ENUMS[("V1beta1PredictorSpec",
                                                           "scale_metric")]
    assert set(predictor["scaleMetricType"]["enum"]) == ENUMS[("V1beta1PredictorSpec",
                                                               "scale_metric_type")]
    metric = predictor["autoScaling"]["properties"]["metrics"]["items"]["properties"]
    assert set(metric["type"]["enum"]) == ENUMS[("V1beta1MetricsSpec", "type")]
    runtime = load_crd_schema("ServingRuntime")["properties"]["spec"]["properties"]
    protocols = runtime["protocolVersions"]["items"]
    assert set(protocols.get("enum", PROTOCOL_VERSIONS)) <= PROTOCOL_VERSIONS
