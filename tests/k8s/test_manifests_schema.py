"""Rendered InferenceServices validate against KServe's CRD schema, unknown fields rejected.

A manifest that passes ``kubectl kustomize`` can still be refused by the API server
(or, worse, have a misspelt field silently pruned). These tests apply the same
openAPIV3Schema offline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.k8s

Errors = Callable[[dict[str, Any]], list[str]]


def test_overlay_matches_crd_schema(isvc: dict[str, Any], schema_errors: Errors) -> None:
    assert schema_errors(isvc) == []


def test_base_matches_crd_schema(base_isvc: dict[str, Any], schema_errors: Errors) -> None:
    assert schema_errors(base_isvc) == []


def test_misspelt_probe_field_is_rejected(base_isvc: dict[str, Any],
                                          schema_errors: Errors) -> None:
    probe = base_isvc["spec"]["predictor"]["containers"][0]["readinessProbe"]["httpGet"]
    probe["paht"] = probe.pop("path")
    errors = schema_errors(base_isvc)
    assert any("paht" in e and "readinessProbe/httpGet" in e for e in errors), errors


def test_misspelt_predictor_field_is_rejected(base_isvc: dict[str, Any],
                                              schema_errors: Errors) -> None:
    predictor = base_isvc["spec"]["predictor"]
    predictor["minReplica"] = predictor.pop("minReplicas")
    errors = schema_errors(base_isvc)
    assert any("minReplica" in e for e in errors), errors


def test_scale_metric_outside_the_enum_is_rejected(base_isvc: dict[str, Any],
                                                   schema_errors: Errors) -> None:
    base_isvc["spec"]["predictor"]["scaleMetric"] = "gpu"
    errors = schema_errors(base_isvc)
    assert any("scaleMetric" in e and "gpu" in e for e in errors), errors


def test_quoted_number_for_an_integer_field_is_rejected(base_isvc: dict[str, Any],
                                                        schema_errors: Errors) -> None:
    base_isvc["spec"]["predictor"]["scaleTarget"] = "16"
    assert any("scaleTarget" in e for e in schema_errors(base_isvc))


def test_int_or_string_fields_take_both(base_isvc: dict[str, Any],
                                        schema_errors: Errors) -> None:
    container = base_isvc["spec"]["predictor"]["containers"][0]
    container["readinessProbe"]["httpGet"]["port"] = "http1"
    container["resources"]["limits"]["cpu"] = 4
    assert schema_errors(base_isvc) == []
    container["readinessProbe"]["httpGet"]["port"] = 80.5
    assert any("readinessProbe/httpGet/port" in e for e in schema_errors(base_isvc))


def test_duplicate_container_port_is_rejected(base_isvc: dict[str, Any],
                                              schema_errors: Errors) -> None:
    ports = base_isvc["spec"]["predictor"]["containers"][0]["ports"]
    ports.append({"name": "again", "containerPort": ports[0]["containerPort"]})
    assert any("duplicate" in e for e in schema_errors(base_isvc))


def test_non_string_annotation_is_rejected(base_isvc: dict[str, Any],
                                           schema_errors: Errors) -> None:
    # YAML `true` without quotes: the API server refuses a non-string annotation.
    base_isvc["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] = True
    assert any("annotations" in e for e in schema_errors(base_isvc))


def test_status_keeps_unknown_fields(base_isvc: dict[str, Any], schema_errors: Errors) -> None:
    # status is x-kubernetes-preserve-unknown-fields: anything goes below it.
    base_isvc["status"] = {"somethingNew": {"nested": [1, 2]}}
    assert schema_errors(base_isvc) == []
